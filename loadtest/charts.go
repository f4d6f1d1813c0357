package main

import (
	"fmt"
	"math"
	"os"
	"sort"
	"strings"

	"github.com/popbox/popbox/loadtest/internal/chart"
	"github.com/popbox/popbox/loadtest/internal/hist"
)

var chartQuantiles = []float64{0, 0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9999, 0.99995, 0.99999}

// percentileLine is the latency (ms) at each quantile the count supports;
// the caller appends the max.
func percentileLine(name string, h *hist.Hist) (chart.Line, float64) {
	l := chart.Line{Name: name}
	last := 0.0
	for _, q := range chartQuantiles {
		if q > 0 && float64(h.Count())*(1-q) < 1 {
			break
		}
		last = chart.Nines(q)
		l.Points = append(l.Points, chart.Point{X: last, Y: ms(h.Quantile(q))})
	}
	return l, last
}

// addMax ends every line with its max at one x past the last percentile.
func addMax(p *chart.Panel, maxes []float64, lastX float64) {
	n := int(math.Ceil(lastX - 1e-9))
	x := float64(n) + 0.5
	p.XTicks = append(chart.NinesTicks(n), chart.Tick{At: x, Label: "max"})
	for i := range p.Lines {
		p.Lines[i].Points = append(p.Lines[i].Points, chart.Point{X: x, Y: maxes[i]})
	}
}

// writeChart draws the result's latency percentiles and throughput over
// time as SVG.
func writeChart(path string, r *Result) error {
	var panels []chart.Panel
	lat := chart.Panel{XLabel: "percentile (last point: max)", YLabel: "ms"}
	lastX := 0.0
	var maxes []float64
	var names []string
	for k := range r.Histograms {
		names = append(names, k)
	}
	sort.Strings(names)
	if r.Fanout != nil {
		lat.Title = "fan-out: time from provision to each subscriber's delivery, per round"
		for _, k := range names {
			if strings.HasPrefix(k, "round_") && r.Histograms[k].Count() > 0 {
				l, x := percentileLine(strings.Replace(k, "_", " ", 1), r.Histograms[k])
				lat.Lines = append(lat.Lines, l)
				maxes = append(maxes, ms(r.Histograms[k].Max()))
				lastX = max(lastX, x)
			}
		}
	} else if h := r.Histograms[r.Scenario]; r.Wrk != nil && h != nil && h.Count() > 0 {
		lat.Title = "request→answer latency percentiles"
		l, x := percentileLine(r.Scenario, h)
		lat.Lines = append(lat.Lines, l)
		maxes = append(maxes, ms(h.Max()))
		lastX = x
	} else if len(r.Latency) > 0 {
		lat.Title = "provision→receive latency percentiles by transport"
		for _, k := range latencyKeys(r.Latency) {
			l, x := percentileLine(k, r.Histograms[k])
			lat.Lines = append(lat.Lines, l)
			maxes = append(maxes, ms(r.Histograms[k].Max()))
			lastX = max(lastX, x)
		}
	}
	if len(lat.Lines) > 0 {
		addMax(&lat, maxes, lastX)
		panels = append(panels, lat)
	}
	if s := r.Series; s != nil && (len(s.Delivered) > 1 || len(s.Provisioned) > 1) {
		tp := chart.Panel{Title: "messages per second", XLabel: "seconds from the start of the run", YLabel: "messages/s"}
		for _, l := range []struct {
			name string
			v    []int64
		}{{"provisioned", s.Provisioned}, {"delivered", s.Delivered}} {
			line := chart.Line{Name: l.name}
			v := l.v
			if len(v) > 1 {
				v = v[:len(v)-1] // the last second is partial
			}
			for i, v := range v {
				line.Points = append(line.Points, chart.Point{X: float64(i), Y: float64(v)})
			}
			tp.Lines = append(tp.Lines, line)
		}
		panels = append(panels, tp)
	}
	if len(panels) == 0 {
		panels = append(panels, chart.Panel{Title: "no latency or throughput data"})
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	title := fmt.Sprintf("popbox loadtest %s — %d subscribers, %s", r.Scenario, r.Subscribers, r.Started.Format("2006-01-02 15:04 UTC"))
	if err := chart.Write(f, title, panels); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
