package chart

import (
	"bytes"
	"encoding/xml"
	"io"
	"math"
	"strings"
	"testing"
)

func TestWriteIsValidSVG(t *testing.T) {
	var b bytes.Buffer
	panels := []Panel{
		{Title: "latency <ms> & such", XLabel: "percentile", YLabel: "ms", XTicks: NinesTicks(3), Lines: []Line{
			{Name: "sse", Points: []Point{{0, 0.5}, {1, 1}, {2, 4}, {3, 9}}},
			{Name: "ws", Points: []Point{{0, 0.4}, {1, 2}, {2, 3}}},
		}},
		{Title: "throughput", Lines: []Line{{Name: "delivered", Points: []Point{{0, 100}, {1, 20000}, {2, 19000}}}}},
		{Title: "empty"},
		{Title: "flat", Lines: []Line{{Name: "zero", Points: []Point{{5, 0}}}}},
	}
	if err := Write(&b, "title", panels); err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(bytes.NewReader(b.Bytes()))
	polylines := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, b.String())
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "polyline" {
			polylines++
			for _, a := range se.Attr {
				if a.Name.Local == "points" && strings.Contains(a.Value, "NaN") {
					t.Fatalf("NaN in points: %s", a.Value)
				}
			}
		}
	}
	if polylines != 4 {
		t.Fatalf("%d polylines, want 4", polylines)
	}
	if !strings.Contains(b.String(), "no data") || !strings.Contains(b.String(), "p99.9") {
		t.Fatal("missing the empty-panel note or the percentile ticks")
	}
}

func TestHelpers(t *testing.T) {
	if math.Abs(Nines(0.99)-2) > 1e-9 || Nines(0) != 0 || math.IsInf(Nines(1), 0) {
		t.Fatal("Nines")
	}
	for raw, want := range map[float64]float64{0.3: 0.5, 7: 10, 120: 200, 0: 1, 2000: 2000} {
		if got := niceStep(raw); got != want {
			t.Errorf("niceStep(%v) = %v, want %v", raw, got, want)
		}
	}
	if fmtNum(25000) != "25k" || fmtNum(2500000) != "2.5M" || fmtNum(0.25) != "0.25" {
		t.Error(fmtNum(25000), fmtNum(2500000), fmtNum(0.25))
	}
}
