package delivery_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/delivery"
)

func TestParseDailyAt(t *testing.T) {
	tests := []struct {
		in           string
		hour, minute int
		ok           bool
	}{
		{"00:00", 0, 0, true},
		{"08:30", 8, 30, true},
		{"23:59", 23, 59, true},
		{"24:00", 0, 0, false},
		{"12:60", 0, 0, false},
		{"8:30", 0, 0, false},
		{"08:3", 0, 0, false},
		{"08-30", 0, 0, false},
		{"+8:30", 0, 0, false},
		{"08:+3", 0, 0, false},
		{"０8:30", 0, 0, false},
		{"", 0, 0, false},
		{"08:30:00", 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			h, m, err := delivery.ParseDailyAt(tt.in)
			if (err == nil) != tt.ok || h != tt.hour || m != tt.minute {
				t.Errorf("ParseDailyAt(%q) = %d, %d, %v; want %d, %d, ok %v", tt.in, h, m, err, tt.hour, tt.minute, tt.ok)
			}
		})
	}
}

// FuzzParseDailyAt: whatever it is given, ParseDailyAt accepts only what formats back to
// itself as HH:MM, within a day.
func FuzzParseDailyAt(f *testing.F) {
	for _, s := range []string{"08:30", "23:59", "24:00", "8:30", "٠٨:٣٠", "08:30\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, m, err := delivery.ParseDailyAt(s)
		if err != nil {
			return
		}
		if h < 0 || h > 23 || m < 0 || m > 59 || fmt.Sprintf("%02d:%02d", h, m) != s {
			t.Errorf("ParseDailyAt(%q) = %d, %d: not the time it reads", s, h, m)
		}
	})
}

func TestDigestCloseAt(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		g    delivery.Digest
		at   time.Time
		loc  *time.Location
		want time.Time
	}{
		{"window", delivery.Digest{Window: 10 * time.Minute}, time.Date(2026, 1, 1, 23, 55, 0, 0, time.UTC), time.UTC,
			time.Date(2026, 1, 2, 0, 5, 0, 0, time.UTC)},
		{"daily, later today", delivery.Digest{DailyAt: "18:00"}, time.Date(2026, 6, 1, 9, 0, 0, 0, tokyo), tokyo,
			time.Date(2026, 6, 1, 18, 0, 0, 0, tokyo)},
		{"daily, tomorrow", delivery.Digest{DailyAt: "08:00"}, time.Date(2026, 6, 1, 9, 0, 0, 0, tokyo), tokyo,
			time.Date(2026, 6, 2, 8, 0, 0, 0, tokyo)},
		{"daily, at the time: the next day", delivery.Digest{DailyAt: "08:00"}, time.Date(2026, 6, 1, 8, 0, 0, 0, tokyo), tokyo,
			time.Date(2026, 6, 2, 8, 0, 0, 0, tokyo)},
		{"daily, the zone's date, not UTC's", delivery.Digest{DailyAt: "08:00"}, time.Date(2026, 6, 1, 23, 30, 0, 0, time.UTC), tokyo,
			time.Date(2026, 6, 3, 8, 0, 0, 0, tokyo)}, // 08:30 on June 2 in Tokyo
		{"daily, into daylight saving time", delivery.Digest{DailyAt: "08:00"}, time.Date(2026, 3, 7, 20, 0, 0, 0, ny), ny,
			time.Date(2026, 3, 8, 12, 0, 0, 0, time.UTC)},
		{"daily, out of daylight saving time", delivery.Digest{DailyAt: "08:00"}, time.Date(2026, 10, 31, 20, 0, 0, 0, ny), ny,
			time.Date(2026, 11, 1, 13, 0, 0, 0, time.UTC)},
		{"daily, a time the DST change skips", delivery.Digest{DailyAt: "02:30"}, time.Date(2026, 3, 7, 20, 0, 0, 0, ny), ny,
			time.Date(2026, 3, 8, 3, 30, 0, 0, ny)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.g.CloseAt(tt.at, tt.loc); !got.Equal(tt.want) {
				t.Errorf("CloseAt(%s) = %s, want %s", tt.at, got, tt.want)
			}
		})
	}
}
