package bench

import (
	"errors"
	"fmt"
	"image/color"
	"io"
	"os"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// PlotDPI is the resolution of the PNG plots: a plot of width w points is
// w*PlotDPI/72 pixels wide.
const PlotDPI = 96

// ErrNothingToPlot is returned when no scale has a dispatch latency.
var ErrNothingToPlot = errors.New("no scale has a dispatch latency")

// PlotLatency draws the dispatch latency p50 and p99 against the node count
// of r's scales as a PNG of width x height pixels, with the p99 target as a
// dashed line. The node axis is logarithmic when the counts span more than a
// factor of ten.
func PlotLatency(w io.Writer, r *Report, width, height int) error {
	var p50, p99 plotter.XYs
	for _, s := range r.Scales {
		if s.Dispatch == nil {
			continue
		}
		p50 = append(p50, plotter.XY{X: float64(s.Nodes), Y: s.Dispatch.P50Ms})
		p99 = append(p99, plotter.XY{X: float64(s.Nodes), Y: s.Dispatch.P99Ms})
	}
	if len(p50) == 0 {
		return ErrNothingToPlot
	}
	p := plot.New()
	p.Title.Text = "Pod dispatch latency (API watch event to edge commit)"
	p.X.Label.Text = "edge nodes on one cloudcore"
	p.Y.Label.Text = "latency (ms)"
	p.Y.Min = 0
	p.Add(plotter.NewGrid())

	minX, maxX := p50[0].X, p50[len(p50)-1].X
	if maxX > 10*minX {
		p.X.Scale = plot.LogScale{}
	}
	// A tick at each node count measured.
	var ticks []plot.Tick
	for _, xy := range p50 {
		ticks = append(ticks, plot.Tick{Value: xy.X, Label: strconv.FormatFloat(xy.X, 'f', -1, 64)})
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	for i, line := range []struct {
		name string
		xys  plotter.XYs
	}{{"p50", p50}, {"p99", p99}} {
		l, pts, err := plotter.NewLinePoints(line.xys)
		if err != nil {
			return fmt.Errorf("plot %s: %w", line.name, err)
		}
		c := [...]color.Color{color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}}[i]
		l.Color, pts.Color = c, c
		l.Width = vg.Points(2)
		pts.Shape = draw.CircleGlyph{}
		pts.Radius = vg.Points(3)
		p.Add(l, pts)
		p.Legend.Add(line.name, l, pts)
	}
	lo, hi := minX, maxX
	if lo == hi {
		lo, hi = lo*0.9, hi*1.1
	}
	target, err := plotter.NewLine(plotter.XYs{{X: lo, Y: TargetDispatchP99Ms}, {X: hi, Y: TargetDispatchP99Ms}})
	if err != nil {
		return fmt.Errorf("plot target: %w", err)
	}
	target.Color = color.Gray{Y: 0x60}
	target.Dashes = []vg.Length{vg.Points(6), vg.Points(4)}
	p.Add(target)
	p.Legend.Add(fmt.Sprintf("p99 target at %d nodes", TargetDispatchNodes), target)
	// Room above the highest point and the target line for the legend.
	top := float64(TargetDispatchP99Ms)
	for _, xy := range p99 {
		top = max(top, xy.Y)
	}
	p.Y.Max = top * 1.15
	p.Legend.Top = true
	p.Legend.Left = true

	c := vgimg.NewWith(vgimg.UseWH(pixels(width), pixels(height)), vgimg.UseDPI(PlotDPI))
	p.Draw(draw.New(c))
	if _, err := (vgimg.PngCanvas{Canvas: c}).WriteTo(w); err != nil {
		return fmt.Errorf("write png: %w", err)
	}
	return nil
}

// PlotLatencyFile writes PlotLatency's PNG to path.
func PlotLatencyFile(path string, r *Report, width, height int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := PlotLatency(f, r, width, height); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// pixels is the length of n pixels at PlotDPI.
func pixels(n int) vg.Length {
	return vg.Length(n) * vg.Inch / PlotDPI
}
