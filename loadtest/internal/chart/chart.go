// Package chart draws simple line charts as standalone SVG documents, by
// hand (no dependencies): the load tool's latency-percentile and
// throughput-over-time pictures.
package chart

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// Point is one (x, y) value.
type Point struct{ X, Y float64 }

// Line is one named series.
type Line struct {
	Name   string
	Points []Point
}

// Tick is an axis mark at a value with a label.
type Tick struct {
	At    float64
	Label string
}

// Panel is one chart: lines over shared axes.
type Panel struct {
	Title  string
	XLabel string
	YLabel string
	Lines  []Line
	// XTicks replaces the automatic x-axis ticks when set.
	XTicks []Tick
}

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"}

const (
	width      = 760
	panelH     = 320
	marginL    = 70
	marginR    = 150
	marginT    = 36
	marginB    = 48
	plotW      = width - marginL - marginR
	plotH      = panelH - marginT - marginB
	fontFamily = "sans-serif"
)

// Write renders the panels stacked vertically as one SVG document.
func Write(w io.Writer, title string, panels []Panel) error {
	var b strings.Builder
	h := len(panels)*panelH + 30
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="%s" font-size="12">`+"\n",
		width, h, width, h, fontFamily)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="15" font-weight="bold">%s</text>`+"\n", marginL, esc(title))
	for i, p := range panels {
		drawPanel(&b, p, 30+i*panelH)
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func esc(s string) string { return html.EscapeString(s) }

func drawPanel(b *strings.Builder, p Panel, top int) {
	x0, y0 := float64(marginL), float64(top+marginT)
	xmin, xmax, ymax := math.Inf(1), math.Inf(-1), 0.0
	for _, l := range p.Lines {
		for _, pt := range l.Points {
			xmin, xmax = math.Min(xmin, pt.X), math.Max(xmax, pt.X)
			ymax = math.Max(ymax, pt.Y)
		}
	}
	fmt.Fprintf(b, `<text x="%d" y="%d" font-size="13" font-weight="bold">%s</text>`+"\n", marginL, top+22, esc(p.Title))
	fmt.Fprintf(b, `<rect x="%g" y="%g" width="%d" height="%d" fill="none" stroke="#888"/>`+"\n", x0, y0, plotW, plotH)
	if math.IsInf(xmin, 1) {
		fmt.Fprintf(b, `<text x="%g" y="%g" fill="#888">no data</text>`+"\n", x0+10, y0+20)
		return
	}
	if xmax == xmin {
		xmax = xmin + 1
	}
	ystep := niceStep(ymax / 5)
	if ymax <= 0 {
		ymax, ystep = 1, 0.2
	}
	ytop := math.Ceil(ymax/ystep) * ystep
	sx := func(x float64) float64 { return x0 + (x-xmin)/(xmax-xmin)*plotW }
	sy := func(y float64) float64 { return y0 + plotH - y/ytop*plotH }
	// grid and y ticks
	for y := 0.0; y <= ytop+ystep/2; y += ystep {
		fmt.Fprintf(b, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="#eee"/>`+"\n", x0, sy(y), x0+plotW, sy(y))
		fmt.Fprintf(b, `<text x="%g" y="%.1f" text-anchor="end">%s</text>`+"\n", x0-6, sy(y)+4, fmtNum(y))
	}
	ticks := p.XTicks
	if len(ticks) == 0 {
		step := niceStep((xmax - xmin) / 8)
		for x := math.Ceil(xmin/step) * step; x <= xmax+step/1000; x += step {
			ticks = append(ticks, Tick{At: x, Label: fmtNum(x)})
		}
	}
	for _, t := range ticks {
		if t.At < xmin || t.At > xmax {
			continue
		}
		fmt.Fprintf(b, `<line x1="%.1f" y1="%g" x2="%.1f" y2="%g" stroke="#eee"/>`+"\n", sx(t.At), y0, sx(t.At), y0+plotH)
		fmt.Fprintf(b, `<text x="%.1f" y="%g" text-anchor="middle">%s</text>`+"\n", sx(t.At), y0+plotH+16, esc(t.Label))
	}
	fmt.Fprintf(b, `<text x="%g" y="%d" text-anchor="middle">%s</text>`+"\n", x0+plotW/2, top+panelH-8, esc(p.XLabel))
	fmt.Fprintf(b, `<text transform="translate(%d %g) rotate(-90)" text-anchor="middle">%s</text>`+"\n", 16, y0+plotH/2, esc(p.YLabel))
	for i, l := range p.Lines {
		color := palette[i%len(palette)]
		var pts []string
		for _, pt := range l.Points {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", sx(pt.X), sy(pt.Y)))
		}
		fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", color, strings.Join(pts, " "))
		ly := y0 + 10 + float64(i)*18
		fmt.Fprintf(b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="%s" stroke-width="3"/>`+"\n", x0+plotW+12, ly, x0+plotW+32, ly, color)
		fmt.Fprintf(b, `<text x="%g" y="%g">%s</text>`+"\n", x0+plotW+38, ly+4, esc(l.Name))
	}
}

// niceStep rounds a raw step up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 || math.IsNaN(raw) || math.IsInf(raw, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if raw <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func fmtNum(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 1e6:
		return fmt.Sprintf("%gM", math.Round(v/1e5)/10)
	case math.Abs(v) >= 1e4:
		return fmt.Sprintf("%gk", math.Round(v/100)/10)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%g", math.Round(v*1000)/1000)
	}
}

// Nines maps a quantile q to the "number of nines" axis used by latency
// percentile charts: 0→0, 0.9→1, 0.99→2, 0.999→3.
func Nines(q float64) float64 {
	if q >= 1 {
		q = 1 - 1e-6
	}
	return -math.Log10(1 - q)
}

// NinesTicks are the x ticks of a percentile chart up to max nines.
func NinesTicks(maxNines int) []Tick {
	labels := []string{"p0", "p90", "p99", "p99.9", "p99.99", "p99.999", "p99.9999"}
	var t []Tick
	for i := 0; i <= maxNines && i < len(labels); i++ {
		t = append(t, Tick{At: float64(i), Label: labels[i]})
	}
	return t
}
