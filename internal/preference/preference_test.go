package preference

import (
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/delivery"
)

func ptr[T any](v T) *T { return &v }

func TestAllows(t *testing.T) {
	account := Category{Name: "account", DefaultOptIn: true}
	marketing := Category{Name: "marketing", DefaultOptIn: false}
	security := Category{Name: "security", Critical: true, DefaultOptIn: true}
	tests := []struct {
		name string
		s    *Settings
		c    Category
		ch   delivery.Channel
		want bool
	}{
		{"no settings, default in", nil, account, delivery.Email, true},
		{"no settings, default out", nil, marketing, delivery.Email, false},
		{"zero settings", &Settings{}, account, delivery.SMS, true},
		{"global opt-out", &Settings{GlobalOptOut: true}, account, delivery.Email, false},
		{"global opt-out, critical", &Settings{GlobalOptOut: true}, security, delivery.Email, true},
		{"channel opt-out", &Settings{OptedOutChannels: []delivery.Channel{delivery.SMS}}, account, delivery.SMS, false},
		{"channel opt-out, other channel", &Settings{OptedOutChannels: []delivery.Channel{delivery.SMS}}, account, delivery.Email, true},
		{"category opt-out", &Settings{Categories: map[string]CategorySetting{"account": {OptedOut: ptr(true)}}}, account, delivery.Email, false},
		{"category opt-in", &Settings{Categories: map[string]CategorySetting{"marketing": {OptedOut: ptr(false)}}}, marketing, delivery.Email, true},
		{"category listed, default kept", &Settings{Categories: map[string]CategorySetting{"marketing": {}}}, marketing, delivery.Email, false},
		{"category and channel opt-out", &Settings{Categories: map[string]CategorySetting{
			"marketing": {OptedOut: ptr(false), OptedOutChannels: []delivery.Channel{delivery.Email}}}}, marketing, delivery.Email, false},
		{"category and channel opt-out, other channel", &Settings{Categories: map[string]CategorySetting{
			"marketing": {OptedOut: ptr(false), OptedOutChannels: []delivery.Channel{delivery.Email}}}}, marketing, delivery.IOS, true},
		{"another category's opt-out", &Settings{Categories: map[string]CategorySetting{"marketing": {OptedOut: ptr(true)}}}, account, delivery.Email, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.s.Allows(tt.c, tt.ch); got != tt.want {
				t.Errorf("Allows = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	cats := map[string]Category{"account": {Name: "account"}, "security": {Name: "security", Critical: true}}
	tests := []struct {
		name  string
		s     Settings
		field string
	}{
		{"valid", Settings{GlobalOptOut: true, Categories: map[string]CategorySetting{"account": {OptedOut: ptr(true)}},
			QuietHours: &QuietHours{Start: "22:00", End: "07:00"}}, ""},
		{"critical listed without opt-out", Settings{Categories: map[string]CategorySetting{"security": {OptedOut: ptr(false)}}}, ""},
		{"unknown category", Settings{Categories: map[string]CategorySetting{"nope": {}}}, "settings.categories[nope]"},
		{"critical opt-out", Settings{Categories: map[string]CategorySetting{"security": {OptedOut: ptr(true)}}}, "settings.categories[security]"},
		{"critical channel opt-out", Settings{Categories: map[string]CategorySetting{
			"security": {OptedOutChannels: []delivery.Channel{delivery.SMS}}}}, "settings.categories[security]"},
		{"bad channel", Settings{OptedOutChannels: []delivery.Channel{"fax"}}, "settings.opted_out_channels[0]"},
		{"bad time", Settings{QuietHours: &QuietHours{Start: "25:00", End: "07:00"}}, "settings.quiet_hours"},
		{"empty window", Settings{QuietHours: &QuietHours{Start: "07:00", End: "07:00"}}, "settings.quiet_hours"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			field, reason := tt.s.Validate(cats)
			if field != tt.field || (field != "" && reason == "") {
				t.Errorf("Validate = %q %q, want field %q", field, reason, tt.field)
			}
		})
	}
}

func TestQuietHoursUntil(t *testing.T) {
	lisbon, err := time.LoadLocation("Europe/Lisbon")
	if err != nil {
		t.Fatal(err)
	}
	at := func(s string) time.Time {
		v, err := time.ParseInLocation("2006-01-02 15:04", s, lisbon)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	night := QuietHours{Start: "22:00", End: "07:00"}
	lunch := QuietHours{Start: "13:00", End: "14:30"}
	tests := []struct {
		name string
		q    QuietHours
		t    time.Time
		want time.Time // zero: not quiet
	}{
		{"evening", night, at("2026-03-10 23:15"), at("2026-03-11 07:00")},
		{"at start", night, at("2026-03-10 22:00"), at("2026-03-11 07:00")},
		{"early morning", night, at("2026-03-11 03:00"), at("2026-03-11 07:00")},
		{"at end", night, at("2026-03-11 07:00"), time.Time{}},
		{"daytime", night, at("2026-03-11 12:00"), time.Time{}},
		{"same-day window", lunch, at("2026-03-11 13:30"), at("2026-03-11 14:30")},
		{"outside same-day window", lunch, at("2026-03-11 15:00"), time.Time{}},
		// Portugal moves its clocks forward at 01:00 on 2026-03-29: 07:00 is still 07:00.
		{"across daylight saving", night, at("2026-03-28 23:00"), at("2026-03-29 07:00")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.q.Until(tt.t.UTC(), lisbon)
			if ok != !tt.want.IsZero() || !got.Equal(tt.want) {
				t.Errorf("Until(%s) = %s %v, want %s", tt.t, got, ok, tt.want)
			}
		})
	}
}

func TestBlocked(t *testing.T) {
	sups := []Suppression{
		{Channel: delivery.SMS, Address: "+14155550100", Reason: "stop"},
		{Channel: delivery.Email, Address: "a@example.com", Category: "marketing", Reason: "unsubscribe"},
		{Channel: delivery.IOS, Address: "abcd", Reason: "unregistered", Invalid: true},
	}
	account := Category{Name: "account"}
	marketing := Category{Name: "marketing"}
	security := Category{Name: "security", Critical: true}
	tests := []struct {
		name   string
		c      Category
		ch     delivery.Channel
		addr   string
		reason string
	}{
		{"stop", account, delivery.SMS, "+14155550100", ReasonSuppressed},
		{"stop, critical", security, delivery.SMS, "+14155550100", ""},
		{"unsubscribe from the category", marketing, delivery.Email, "a@example.com", ReasonSuppressed},
		{"unsubscribe, other category", account, delivery.Email, "a@example.com", ""},
		{"invalid token, critical", security, delivery.IOS, "abcd", ReasonInvalid},
		{"other address", account, delivery.SMS, "+14155550101", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reason, blocked := Blocked(sups, tt.c, tt.ch, tt.addr)
			if reason != tt.reason || blocked != (tt.reason != "") {
				t.Errorf("Blocked = %q %v, want %q", reason, blocked, tt.reason)
			}
		})
	}
}
