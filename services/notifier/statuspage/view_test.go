package statuspage

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/services/notifier/ops"
)

func TestNiceStep(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ top, want int64 }{
		{0, 1}, {1, 1}, {4, 1}, {5, 2}, {8, 2}, {9, 5}, {20, 5}, {21, 10}, {40, 10},
		{41, 20}, {320, 100}, {401, 200}, {10_000, 5_000}, {1_000_001, 500_000},
	} {
		if got := niceStep(c.top); got != c.want {
			t.Errorf("niceStep(%d) = %d, want %d", c.top, got, c.want)
		}
	}
}

func TestFormats(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, got, want string
	}{
		{"age 0", formatAge(0), "0s"},
		{"age negative", formatAge(-3), "0s"},
		{"age 59.9", formatAge(59.9), "59s"},
		{"age 60", formatAge(60), "1m 00s"},
		{"age 3599", formatAge(3599), "59m 59s"},
		{"age 2h", formatAge(7325), "2h 02m"},
		{"age days", formatAge(90000), "1d 1h"},
		{"tenths 0", formatTenths(0), "0.0"},
		{"tenths half", formatTenths(0.25), "0.3"},
		{"tenths 0.04", formatTenths(0.04), "0.0"},
		{"tenths 12", formatTenths(12), "12.0"},
		{"tenths 41.25", formatTenths(41.25), "41.3"},
		{"tenths NaN", formatTenths(math.NaN()), "–"},
		{"compact 750", formatCompact(750), "750"},
		{"compact 1500", formatCompact(1500), "1.5k"},
		{"compact 20000", formatCompact(20000), "20k"},
		{"compact 2000000", formatCompact(2_000_000), "2M"},
		{"time", formatTime(time.Date(2026, 3, 14, 10, 0, 0, 999, time.FixedZone("CET", 3600))), "2026-03-14 09:00:00 UTC"},
	} {
		if c.got != c.want {
			t.Errorf("%s: %q, want %q", c.name, c.got, c.want)
		}
	}
}

func TestChart(t *testing.T) {
	t.Parallel()
	end := time.Date(2026, 3, 14, 9, 0, 0, 0, time.UTC)
	at := func(ago time.Duration, chs ...ops.ChannelSample) ops.Sample {
		return ops.Sample{Time: end.Add(-ago), Channels: chs}
	}
	ch := func(name string, pending, inFlight int64) ops.ChannelSample {
		return ops.ChannelSample{Channel: name, Pending: pending, InFlight: inFlight}
	}
	s := ops.Snapshot{
		Latest: at(0, ch("sms", 15, 5), ch("email", 0, 0)),
		History: []ops.Sample{
			at(16*time.Minute, ch("sms", 1000, 0)), // older than the window: not drawn, not scaled to
			at(15*time.Minute, ch("sms", 0, 0), ch("ios", 7, 0)),
			at(450*time.Second, ch("sms", 30, 10)),
			at(0, ch("sms", 15, 5), ch("email", 0, 0)),
		},
	}
	c := newChart(s)
	var got []string
	for _, sr := range c.Series {
		got = append(got, sr.Channel+" "+sr.Style+" "+sr.Latest+" ["+sr.Points+"]")
	}
	// Depth 40 at most: the axis runs to 40 in steps of 10; x from 50 to 344, y from 170 to 10.
	want := []string{
		"sms s0 20 [50.0,170.0 197.0,10.0 344.0,90.0]",
		"email s1 0 [344.0,170.0 344.0,170.0]", // one sample: a dot
		"ios s2 – [50.0,142.0 50.0,142.0]",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("series:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var labels []string
	for _, tk := range c.YTicks {
		labels = append(labels, tk.Label)
	}
	if strings.Join(labels, " ") != "0 10 20 30 40" {
		t.Errorf("depth labels %v", labels)
	}
	if c.Empty || c.Desc != "Latest queue depth: sms 20, email 0. The scale runs from 0 to 40." {
		t.Errorf("empty %v, description %q", c.Empty, c.Desc)
	}

	// Without a latest sample, the chart ends at the last one in history.
	s.Latest = ops.Sample{}
	c = newChart(s)
	if len(c.Series) != 3 || c.Series[0].Points != "50.0,170.0 197.0,10.0 344.0,90.0" || c.Series[0].Latest != "–" {
		t.Errorf("without a latest sample: %+v", c.Series)
	}
	if c.Desc != "No current sample; the scale runs from 0 to 40." {
		t.Errorf("description %q", c.Desc)
	}
}
