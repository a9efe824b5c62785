package daemon

import (
	"flag"
	"strings"
	"testing"
	"time"
)

func TestRetentionConfig(t *testing.T) {
	fs := flag.NewFlagSet("notifier", flag.ContinueOnError)
	var cfg Config
	cfg.RegisterFlags(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if cfg.Retention.Deliveries != 90*24*time.Hour {
		t.Errorf("--delivery-retention defaults to %s, want 90 days", cfg.Retention.Deliveries)
	}
	for _, tc := range []struct {
		keep time.Duration
		ok   bool
	}{
		{0, true}, {24 * time.Hour, true}, {DefaultDeliveryRetention, true}, {time.Hour, false}, {23 * time.Hour, false},
	} {
		err := RetentionConfig{Deliveries: tc.keep}.check()
		if (err == nil) != tc.ok {
			t.Errorf("--delivery-retention %s: err = %v, want ok %v", tc.keep, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "--delivery-retention") {
			t.Errorf("error %q does not name the flag", err)
		}
	}
}

// TestRetentionTables: the delivery history follows --delivery-retention (0: kept for ever), the
// short links --link-retention, the inbox --inbox-retention, and the key change feed its own
// hour, whatever the flags say.
func TestRetentionTables(t *testing.T) {
	keep := func(cfg Config) map[string]time.Duration {
		out := map[string]time.Duration{}
		for _, tb := range retentionTables(cfg, nil) {
			out[tb.Name] = tb.Keep
		}
		return out
	}
	got := keep(Config{Retention: RetentionConfig{Deliveries: 30 * 24 * time.Hour}, Links: LinksConfig{Retention: 7 * 24 * time.Hour},
		Inbox: InboxConfig{Retention: 60 * 24 * time.Hour}})
	want := map[string]time.Duration{
		"notifier.key_changes": time.Hour, "notifier.links": 7 * 24 * time.Hour, "notifier.link_clicks": 7 * 24 * time.Hour,
		"delivery.attempts": 30 * 24 * time.Hour, "delivery.deliveries": 30 * 24 * time.Hour,
		"delivery.digests":         30 * 24 * time.Hour,
		"notifier.provider_events": 30 * 24 * time.Hour, "notifier.notifications": 30 * 24 * time.Hour,
		"notifier.topic_sends": 30 * 24 * time.Hour,
		"inbox.messages":       60 * 24 * time.Hour,
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s kept %s, want %s", name, got[name], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("tables %v, want %v", got, want)
	}
	got = keep(Config{})
	for _, name := range []string{"delivery.attempts", "delivery.deliveries", "delivery.digests", "notifier.provider_events", "notifier.notifications", "notifier.topic_sends", "inbox.messages"} {
		if got[name] != 0 {
			t.Errorf("with no retention: %s kept %s, want for ever (0)", name, got[name])
		}
	}
	if got["notifier.links"] != defaultLinkRetention {
		t.Errorf("links kept %s without --link-retention, want the default %s", got["notifier.links"], defaultLinkRetention)
	}
}
