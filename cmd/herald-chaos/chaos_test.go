package main

import (
	"io"
	"strings"
	"testing"
)

// TestViolations checks the verdict's pass criteria on hand-made histories: the run fails on a
// lost delivery, on duplicates beyond the sends in flight at the kills, on a stuck or
// unsettled delivery, and on a delivery that no Send asked for beyond the unknown sends.
func TestViolations(t *testing.T) {
	clean := func() *verdict {
		return &verdict{acked: 100, unknown: 5, deliveries: 100, duplicates: 3, bound: 3, strays: 2,
			lostStates: map[string]int64{}, terminalFailed: map[string]int64{},
			faults: map[string]int{"email-failover": 1}, emailVia: map[string]int64{"sendgrid/primary": 90, backupProvider: 10}}
	}
	for _, tc := range []struct {
		name   string
		change func(*verdict)
		want   string // a fragment of the one violation, or "" for none
	}{
		{"clean", func(*verdict) {}, ""},
		{"lost", func(v *verdict) { v.lost, v.lostStates["sent"] = 1, 1 }, "1 acknowledged deliveries lost (sent=1)"},
		{"duplicates over the bound", func(v *verdict) { v.duplicates = 4 }, "4 duplicates at the providers, more than the 3"},
		{"stuck", func(v *verdict) { v.stuck, v.open = 2, 2 }, "2 deliveries stuck"},
		{"not settled", func(v *verdict) { v.open = 1 }, "1 deliveries not terminal after settling"},
		{"strays beyond the unknown sends", func(v *verdict) { v.strays = 6 }, "6 deliveries received that no Send asked for"},
		{"not queued", func(v *verdict) { v.notQueued = 1 }, "answered other than QUEUED"},
		{"no failover", func(v *verdict) { delete(v.emailVia, backupProvider) }, "no email failed over to sendgrid/backup"},
		{"no failover fault, no failover needed", func(v *verdict) {
			delete(v.emailVia, backupProvider)
			delete(v.faults, "email-failover")
		}, ""},
		{"a chain sent twice", func(v *verdict) { v.chains, v.chainsDoubled = 3, 1 }, "1 fallback chains sent more than one step"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := clean()
			tc.change(v)
			got := v.violations()
			if tc.want == "" {
				if len(got) != 0 {
					t.Fatalf("violations = %q, want none", got)
				}
				return
			}
			if len(got) == 0 || !strings.Contains(got[0], tc.want) {
				t.Fatalf("violations = %q, want one containing %q", got, tc.want)
			}
		})
	}
}

func TestParseFlags(t *testing.T) {
	for _, args := range [][]string{{"--soak", "30s"}, {"--rate", "0"}, {"--only", "both"}, {"extra"}} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) = nil error", args)
		}
	}
	c, err := parseFlags([]string{"--soak", "10m"}, io.Discard)
	if err != nil || c.soak.Minutes() != 10 {
		t.Fatalf("parseFlags(--soak 10m) = %+v, %v", c, err)
	}
}
