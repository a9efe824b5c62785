package web

import (
	"net/url"
	"testing"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/preference"
)

// FuzzFromForm posts arbitrary forms: whatever a form holds, the settings it yields are ones
// UpdateSettings accepts, or the user is told what is wrong.
func FuzzFromForm(f *testing.F) {
	for _, s := range []string{
		"",
		"token=x&pause=on&channel=email&channel=sms&receive=account&cat:account=push&quiet_start=22:00&quiet_end=07:00",
		"receive=security&cat:security=email&cat:nope=sms&channel=fax",
		"quiet_start=07:00&quiet_end=07:00:00",
		"quiet_start=24:00&quiet_end=",
		"%zz",
	} {
		f.Add(s)
	}
	cats := []preference.Category{
		{Name: "account", DefaultOptIn: true},
		{Name: "marketing", DefaultOptIn: false},
		{Name: "security", Critical: true, DefaultOptIn: true},
	}
	byName := map[string]preference.Category{}
	for _, c := range cats {
		byName[c.Name] = c
	}
	yes := true
	stored := &preference.Settings{
		OptedOutChannels: []delivery.Channel{delivery.IOS},
		Categories: map[string]preference.CategorySetting{
			"marketing": {OptedOut: &yes, OptedOutChannels: []delivery.Channel{delivery.Android}},
			"gone":      {OptedOut: &yes}, // a category deleted since
		},
	}
	f.Fuzz(func(t *testing.T, body string) {
		form, err := url.ParseQuery(body)
		if err != nil {
			return
		}
		next, problem := fromForm(form, stored, cats)
		if problem != "" {
			return
		}
		if field, reason := next.Validate(byName); field != "" {
			t.Fatalf("form %q gave settings UpdateSettings refuses: %s %s", body, field, reason)
		}
		if !next.Allows(byName["security"], delivery.Email) {
			t.Fatalf("form %q turned off a critical category", body)
		}
	})
}
