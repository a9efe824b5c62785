package statuspage

import (
	"fmt"
	"html/template"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald/services/notifier/ops"
)

// script.js formats and draws exactly as this file does, so that the page looks the same
// before and after its first poll; a change to one belongs in the other.

// The chart's geometry, in SVG user units. The script reads the plot area from the #plot
// rectangle and the window from the chart's data-window attribute.
const (
	chartWidth  = 360
	chartHeight = 220
	plotX       = 50
	plotY       = 10
	plotWidth   = 294
	plotHeight  = 160
	// yTicks is how many intervals divide the depth axis: its top is always yTicks times a
	// round step, so the grid lines stay put and only their labels change.
	yTicks = 4
	// window is how far back the chart looks, ending at the latest sample.
	window = 15 * time.Minute
	// seriesStyles is how many colour and dash combinations style.css defines (.s0 to .s5)
	// for the chart's lines; channels beyond that reuse them in turn.
	seriesStyles = 6
)

// view is what page.html renders.
type view struct {
	Style  template.CSS
	Script template.JS
	// Updated is the latest sample's time (RFC 3339, as in the JSON), empty before the first.
	Updated     string
	UpdatedText string
	Channels    []row
	Chart       chart
	DeadLetters []ops.DeadLetterGroup
	Circuits    []circuit
	Open        int
	Engagement  []engagement
}

// engagement is a row of the click-through table.
type engagement struct {
	ops.EngagementRow
	TemplateText, RateText string
}

// row is a channel in the queues table.
type row struct {
	Channel string
	Cells   []cell
}

// cell is a number in the queues table; Warn marks failures worth a look.
type cell struct {
	Field string
	Text  string
	Warn  bool
}

type circuit struct {
	ops.Circuit
	Reported     string
	ReportedText string
}

type chart struct {
	Width, Height int
	PlotX, PlotY  int
	PlotW, PlotH  int
	PlotBottom    int
	PlotRight     int
	// Where the labels go: the depth labels end at YLabelX, the time labels hang from
	// XLabelY, the axis titles sit at XTitleY and (rotated) YTitleX, and CenterX, CenterY is
	// the middle of the plot.
	YLabelX, XLabelY int
	XTitleY, YTitleX int
	CenterX, CenterY int
	Window           int // seconds
	XTicks           []tick
	YTicks           []tick
	Series           []series
	Empty            bool
	Desc             string
}

type tick struct {
	Pos   float64
	Label string
}

// series is one channel's line and legend entry.
type series struct {
	Channel string
	Style   string // a class of style.css: colour and dash
	Points  string
	Latest  string // the latest depth, or "–" when the latest sample lacks the channel
}

func newView(s ops.Snapshot) view {
	v := view{
		Style:       template.CSS(styleSheet),
		Script:      template.JS(script),
		UpdatedText: "no sample yet",
		DeadLetters: s.DeadLetters,
	}
	if !s.Latest.Time.IsZero() {
		v.Updated = s.Latest.Time.Format(time.RFC3339Nano)
		v.UpdatedText = formatTime(s.Latest.Time)
	}
	for _, c := range s.Latest.Channels {
		v.Channels = append(v.Channels, row{Channel: c.Channel, Cells: cells(c)})
	}
	for _, e := range s.Engagement {
		row := engagement{EngagementRow: e, TemplateText: e.Template, RateText: fmt.Sprintf("%.1f%%", 100*e.ClickRate)}
		if e.Template == "" {
			row.TemplateText = "(inline)"
		}
		v.Engagement = append(v.Engagement, row)
	}
	for _, c := range s.Circuits {
		if c.State == "open" {
			v.Open++
		}
		cv := circuit{Circuit: c, ReportedText: "–"}
		if !c.Updated.IsZero() {
			cv.Reported = c.Updated.Format(time.RFC3339Nano)
			cv.ReportedText = formatTime(c.Updated)
		}
		v.Circuits = append(v.Circuits, cv)
	}
	v.Chart = newChart(s)
	return v
}

// cells are a channel's numbers, in the columns of the queues table; data-field is their JSON
// name.
func cells(c ops.ChannelSample) []cell {
	return []cell{
		{Field: "pending", Text: formatCount(c.Pending)},
		{Field: "in_flight", Text: formatCount(c.InFlight)},
		{Field: "scheduled", Text: formatCount(c.Scheduled)},
		{Field: "retrying", Text: formatCount(c.Retrying)},
		{Field: "oldest_age_seconds", Text: formatAge(c.OldestAgeSeconds)},
		{Field: "send_rate", Text: formatRate(c.SendRate)},
		{Field: "failure_rate", Text: formatRate(c.FailureRate), Warn: c.FailureRate > 0},
		{Field: "dead_letters", Text: formatCount(c.DeadLetters), Warn: c.DeadLetters > 0},
	}
}

func newChart(s ops.Snapshot) chart {
	c := chart{
		Width: chartWidth, Height: chartHeight,
		PlotX: plotX, PlotY: plotY, PlotW: plotWidth, PlotH: plotHeight,
		PlotBottom: plotY + plotHeight, PlotRight: plotX + plotWidth,
		YLabelX: plotX - 6, XLabelY: plotY + plotHeight + 16,
		XTitleY: chartHeight - 6, YTitleX: -(plotY + plotHeight/2),
		CenterX: plotX + plotWidth/2, CenterY: plotY + plotHeight/2,
		Window: int(window / time.Second),
	}
	for m := 15; m >= 0; m -= 5 {
		label := "now"
		if m > 0 {
			label = "−" + strconv.Itoa(m) + " min"
		}
		c.XTicks = append(c.XTicks, tick{Pos: plotX + float64(15-m)/15*plotWidth, Label: label})
	}

	// Times in whole milliseconds, as the script sees them.
	end := s.Latest.Time
	if end.IsZero() && len(s.History) > 0 {
		end = s.History[len(s.History)-1].Time
	}
	endMs := end.UnixMilli()
	startMs := endMs - window.Milliseconds()

	// Channels in the latest sample's order, then any others in the order history shows them.
	type point struct {
		ms    int64
		depth int64
	}
	var order []string
	points := map[string][]point{}
	seen := func(ch string) {
		if _, ok := points[ch]; !ok {
			points[ch] = nil
			order = append(order, ch)
		}
	}
	for _, ch := range s.Latest.Channels {
		seen(ch.Channel)
	}
	var top int64
	for _, smp := range s.History {
		ms := smp.Time.UnixMilli()
		if ms < startMs || ms > endMs {
			continue
		}
		for _, ch := range smp.Channels {
			seen(ch.Channel)
			d := ch.Pending + ch.InFlight
			points[ch.Channel] = append(points[ch.Channel], point{ms, d})
			top = max(top, d)
		}
	}

	step := niceStep(top)
	yMax := float64(step * yTicks)
	for i := range yTicks + 1 {
		c.YTicks = append(c.YTicks, tick{
			Pos:   plotY + plotHeight - float64(i)/yTicks*plotHeight,
			Label: formatCompact(step * int64(i)),
		})
	}

	latest := map[string]int64{}
	for _, ch := range s.Latest.Channels {
		latest[ch.Channel] = ch.Pending + ch.InFlight
	}
	var desc []string
	c.Empty = true
	for i, ch := range order {
		sr := series{Channel: ch, Style: "s" + strconv.Itoa(i%seriesStyles), Latest: "–"}
		if d, ok := latest[ch]; ok {
			sr.Latest = formatCount(d)
			desc = append(desc, ch+" "+sr.Latest)
		}
		pts := make([]string, 0, len(points[ch])+1)
		for _, p := range points[ch] {
			x := plotX + float64(p.ms-startMs)/float64(window.Milliseconds())*plotWidth
			y := plotY + plotHeight - float64(p.depth)/yMax*plotHeight
			pts = append(pts, formatCoord(x)+","+formatCoord(y))
		}
		if len(pts) == 1 {
			// A line of one point draws nothing; a zero-length one draws a dot, thanks to
			// its round caps.
			pts = append(pts, pts[0])
		}
		if len(pts) > 0 {
			c.Empty = false
		}
		sr.Points = strings.Join(pts, " ")
		c.Series = append(c.Series, sr)
	}
	c.Desc = chartDesc(c.Empty, desc, step*yTicks)
	return c
}

// chartDesc is the chart's text alternative: the latest depth of every channel.
func chartDesc(empty bool, latest []string, top int64) string {
	switch {
	case empty && len(latest) == 0:
		return "No samples in the last 15 minutes."
	case len(latest) == 0:
		return fmt.Sprintf("No current sample; the scale runs from 0 to %s.", formatCompact(top))
	}
	return fmt.Sprintf("Latest queue depth: %s. The scale runs from 0 to %s.", strings.Join(latest, ", "), formatCompact(top))
}

// niceStep is the smallest of 1, 2 or 5 times a power of ten that, times yTicks, reaches top.
// It uses integers only, so that the script, in floating point, finds the same.
func niceStep(top int64) int64 {
	target := max((top+yTicks-1)/yTicks, 1)
	p := int64(1)
	for p*10 < target {
		p *= 10
	}
	for _, m := range []int64{1, 2, 5} {
		if m*p >= target {
			return m * p
		}
	}
	return 10 * p
}

func formatCount(n int64) string { return strconv.FormatInt(n, 10) }

func formatRate(r float64) string { return formatTenths(r) }

func formatCoord(f float64) string { return formatTenths(f) }

// formatTenths rounds to one decimal, halves up, as the script's Math.round does; it avoids
// strconv and toFixed, which round halves differently (0.25 is "0.2" in Go, "0.3" in JS).
func formatTenths(f float64) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "–"
	}
	n := int64(math.Round(f * 10))
	sign := ""
	if n < 0 {
		sign, n = "-", -n
	}
	return sign + strconv.FormatInt(n/10, 10) + "." + strconv.FormatInt(n%10, 10)
}

// formatCompact labels the depth axis: 750, 1.5k, 20k, 2M.
func formatCompact(n int64) string {
	switch {
	case n >= 1_000_000:
		return strconv.FormatFloat(float64(n)/1e6, 'f', -1, 64) + "M"
	case n >= 1_000:
		return strconv.FormatFloat(float64(n)/1e3, 'f', -1, 64) + "k"
	}
	return strconv.FormatInt(n, 10)
}

// formatAge shows a wait in its two largest units: 42s, 3m 05s, 2h 10m, 1d 4h.
func formatAge(seconds float64) string {
	s := int64(math.Floor(max(seconds, 0)))
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm %02ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh %02dm", s/3600, s%3600/60)
	}
	return fmt.Sprintf("%dd %dh", s/86400, s%86400/3600)
}

// formatTime shows a moment in UTC to the second, as operators compare it with logs.
func formatTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") + " UTC" }
