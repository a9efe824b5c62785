package monitoring

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/rules"
	"go.yaml.in/yaml/v3"
)

func yamlUnmarshalStrict(b []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	return dec.Decode(v)
}

// expect is what one alert should be doing at one time: firing once for each label set in
// firing (the alert's own labels, without alertname and severity), or not at all.
type expect struct {
	at     time.Duration
	alert  string
	firing []map[string]string
}

// alertScenario evaluates the real rule file every minute over synthetic series, the way
// promtool test rules does, and checks which alerts fire.
type alertScenario struct {
	name   string
	series string // promqltest load lines, one sample a minute from time 0
	expect []expect
}

var alertScenarios = []alertScenario{
	{
		name: "error rate counts failures even when a provider never retried",
		series: `
herald_deliveries_sent_total{job="herald-workers",instance="w1",channel="email",provider="sendgrid"} 0+90x40
herald_deliveries_failed_total{job="herald-workers",instance="w1",channel="email",provider="sendgrid",reason="invalid_address"} 0+10x40
herald_deliveries_sent_total{job="herald-workers",instance="w1",channel="sms",provider="twilio"} 0+1000x40
herald_deliveries_retried_total{job="herald-workers",instance="w1",channel="sms",provider="twilio"} 0+1x40
`,
		expect: []expect{
			{at: 8 * time.Minute, alert: "HeraldProviderErrorRate"},
			{at: 15 * time.Minute, alert: "HeraldProviderErrorRate", firing: []map[string]string{{"channel": "email", "provider": "sendgrid"}}},
		},
	},
	{
		name: "retries and dead letters count as errors, summed over worker replicas",
		series: `
herald_deliveries_sent_total{job="herald-workers",instance="w1",channel="ios",provider="apns"} 0+50x40
herald_deliveries_sent_total{job="herald-workers",instance="w2",channel="ios",provider="apns"} 0+50x40
herald_deliveries_retried_total{job="herald-workers",instance="w2",channel="ios",provider="apns"} 0+4x40
herald_deliveries_dead_total{job="herald-workers",instance="w1",channel="ios",provider="apns"} 0+2x40
`,
		expect: []expect{
			{at: 20 * time.Minute, alert: "HeraldProviderErrorRate", firing: []map[string]string{{"channel": "ios", "provider": "apns"}}},
			{at: 20 * time.Minute, alert: "HeraldDeadLetter", firing: []map[string]string{{"channel": "ios", "provider": "apns"}}},
		},
	},
	{
		name: "a quiet channel's occasional failure does not page",
		series: `
herald_deliveries_sent_total{job="herald-workers",instance="w1",channel="android",provider="fcm"} 0+1x40
herald_deliveries_failed_total{job="herald-workers",instance="w1",channel="android",provider="fcm",reason="bad_token"} 0+1x40
`,
		expect: []expect{{at: 30 * time.Minute, alert: "HeraldProviderErrorRate"}},
	},
	{
		name: "a queue growing past the floor for 10 minutes",
		series: `
herald_queue_pending{job="herald-notifier",instance="n1",channel="email"} 0+100x40
herald_queue_pending{job="herald-notifier",instance="n2",channel="email"} 0+100x40
herald_queue_pending{job="herald-notifier",instance="n1",channel="sms"} 5000x40
herald_queue_pending{job="herald-notifier",instance="n1",channel="android"} 0+10x40
`,
		expect: []expect{
			{at: 15 * time.Minute, alert: "HeraldQueueDepthGrowing"},
			{at: 25 * time.Minute, alert: "HeraldQueueDepthGrowing", firing: []map[string]string{{"channel": "email"}}},
		},
	},
	{
		name: "a queue that drains does not alert",
		series: `
herald_queue_pending{job="herald-notifier",instance="n1",channel="email"} 20000-100x40
`,
		expect: []expect{{at: 30 * time.Minute, alert: "HeraldQueueDepthGrowing"}},
	},
	{
		name: "oldest pending older than 10 minutes",
		series: `
herald_queue_oldest_age_seconds{job="herald-notifier",instance="n1",channel="sms"} 0+60x30
herald_queue_oldest_age_seconds{job="herald-notifier",instance="n1",channel="email"} 30x30
`,
		expect: []expect{
			{at: 10 * time.Minute, alert: "HeraldOldestPendingTooOld"},
			{at: 15 * time.Minute, alert: "HeraldOldestPendingTooOld", firing: []map[string]string{{"channel": "sms"}}},
		},
	},
	{
		name: "one dead letter alerts, and stops once no more arrive",
		series: `
herald_deliveries_dead_total{job="herald-workers",instance="w1",channel="email",provider="smtp"} 0x5 1x30
`,
		expect: []expect{
			{at: 4 * time.Minute, alert: "HeraldDeadLetter"},
			{at: 7 * time.Minute, alert: "HeraldDeadLetter", firing: []map[string]string{{"channel": "email", "provider": "smtp"}}},
			{at: 20 * time.Minute, alert: "HeraldDeadLetter"},
		},
	},
	{
		name: "a circuit open for 2 minutes on any replica",
		series: `
herald_circuit_state{job="herald-workers",instance="w1",channel="sms",provider="twilio"} 0x3 2x10 0x10
herald_circuit_state{job="herald-workers",instance="w2",channel="sms",provider="twilio"} 0x30
herald_circuit_state{job="herald-workers",instance="w1",channel="email",provider="sendgrid"} 0x3 2 1 0x20
`,
		expect: []expect{
			{at: 4 * time.Minute, alert: "HeraldCircuitOpen"},
			{at: 7 * time.Minute, alert: "HeraldCircuitOpen", firing: []map[string]string{{"channel": "sms", "provider": "twilio"}}},
			{at: 20 * time.Minute, alert: "HeraldCircuitOpen"},
		},
	},
	{
		name: "the reconciler re-publishing for 15 minutes",
		series: `
herald_reconciler_republished_total{job="herald-notifier",instance="n1",channel="ios"} 0+3x40
herald_reconciler_republished_total{job="herald-notifier",instance="n1",channel="email"} 0x10 1x30
`,
		expect: []expect{
			{at: 10 * time.Minute, alert: "HeraldReconcilerRepublishing"},
			{at: 25 * time.Minute, alert: "HeraldReconcilerRepublishing", firing: []map[string]string{{"channel": "ios"}}},
		},
	},
	{
		name: "a reconciler whose pass hangs, beside one that keeps passing",
		series: `
herald_reconciler_last_pass_timestamp_seconds{job="herald-notifier",instance="n1"} 0+60x10 600x30
herald_reconciler_last_pass_timestamp_seconds{job="herald-notifier",instance="n2"} 0+60x40
`,
		expect: []expect{
			{at: 18 * time.Minute, alert: "HeraldReconcilerStalled"},
			{at: 21 * time.Minute, alert: "HeraldReconcilerStalled", firing: []map[string]string{{"job": "herald-notifier", "instance": "n1"}}},
		},
	},
	{
		name: "provider configuration errors and limit store failures",
		series: `
herald_provider_config_errors_total{job="herald-workers",instance="w1",channel="ios",provider="apns"} 0x5 0+1x10
herald_limit_store_failures_total{job="herald-notifier",instance="n1"} 0x5 0+2x20
herald_reconciler_expired_total{job="herald-notifier",instance="n1"} 0+1x40
`,
		expect: []expect{
			{at: 4 * time.Minute, alert: "HeraldProviderConfigErrors"},
			{at: 7 * time.Minute, alert: "HeraldProviderConfigErrors", firing: []map[string]string{{"channel": "ios", "provider": "apns"}}},
			{at: 8 * time.Minute, alert: "HeraldLimitStoreFailures"},
			{at: 13 * time.Minute, alert: "HeraldLimitStoreFailures", firing: []map[string]string{{}}},
			{at: 20 * time.Minute, alert: "HeraldDeliveriesExpiring", firing: []map[string]string{{}}},
		},
	},
	{
		name: "a gRPC method failing in the server, not the callers' mistakes nor a quiet method",
		series: `
herald_grpc_server_handled_total{job="herald-notifier",instance="n1",grpc_type="unary",grpc_service="herald.v1.NotificationService",grpc_method="Send",grpc_code="OK"} 0+900x40
herald_grpc_server_handled_total{job="herald-notifier",instance="n2",grpc_type="unary",grpc_service="herald.v1.NotificationService",grpc_method="Send",grpc_code="OK"} 0+900x40
herald_grpc_server_handled_total{job="herald-notifier",instance="n2",grpc_type="unary",grpc_service="herald.v1.NotificationService",grpc_method="Send",grpc_code="Unavailable"} 0x5 0+200x35
herald_grpc_server_handled_total{job="herald-contacts",instance="c1",grpc_type="unary",grpc_service="herald.v1.ContactsService",grpc_method="GetUser",grpc_code="OK"} 0+100x40
herald_grpc_server_handled_total{job="herald-contacts",instance="c1",grpc_type="unary",grpc_service="herald.v1.ContactsService",grpc_method="GetUser",grpc_code="PermissionDenied"} 0+100x40
herald_grpc_server_handled_total{job="herald-contacts",instance="c1",grpc_type="unary",grpc_service="herald.v1.ContactsService",grpc_method="GetUser",grpc_code="InvalidArgument"} 0+100x40
herald_grpc_server_handled_total{job="herald-notifier",instance="n1",grpc_type="unary",grpc_service="herald.v1.AdminService",grpc_method="ListApps",grpc_code="OK"} 0+1x40
herald_grpc_server_handled_total{job="herald-notifier",instance="n1",grpc_type="unary",grpc_service="herald.v1.AdminService",grpc_method="ListApps",grpc_code="Internal"} 0+1x40
`,
		expect: []expect{
			{at: 14 * time.Minute, alert: "HeraldGRPCErrorRate"},
			{at: 20 * time.Minute, alert: "HeraldGRPCErrorRate", firing: []map[string]string{
				{"job": "herald-notifier", "grpc_service": "herald.v1.NotificationService", "grpc_method": "Send"},
			}},
		},
	},
	{
		name: "an instance down, a job down, a job with no targets",
		series: `
up{job="herald-notifier",instance="n1"} 1x20
up{job="herald-notifier",instance="n2"} 1x3 0x20
up{job="herald-workers",instance="w1"} 0x20
`,
		expect: []expect{
			{at: 3 * time.Minute, alert: "HeraldInstanceDown"},
			{at: 10 * time.Minute, alert: "HeraldInstanceDown", firing: []map[string]string{
				{"job": "herald-notifier", "instance": "n2"},
				{"job": "herald-workers", "instance": "w1"},
			}},
			{at: 10 * time.Minute, alert: "HeraldJobDown", firing: []map[string]string{
				{"job": "herald-workers"},
				{"job": "herald-contacts"},
			}},
		},
	},
	{
		name: "a healthy system raises nothing",
		series: `
up{job="herald-notifier",instance="n1"} 1x40
up{job="herald-contacts",instance="c1"} 1x40
up{job="herald-workers",instance="w1"} 1x40
herald_queue_pending{job="herald-notifier",instance="n1",channel="email"} 100x40
herald_queue_oldest_age_seconds{job="herald-notifier",instance="n1",channel="email"} 2x40
herald_deliveries_sent_total{job="herald-workers",instance="w1",channel="email",provider="sendgrid"} 0+500x40
herald_deliveries_retried_total{job="herald-workers",instance="w1",channel="email",provider="sendgrid"} 0+1x40
herald_circuit_state{job="herald-workers",instance="w1",channel="email",provider="sendgrid"} 0x40
herald_deliveries_dead_total{job="herald-workers",instance="w1",channel="email",provider="sendgrid"} 0x40
herald_reconciler_republished_total{job="herald-notifier",instance="n1",channel="email"} 0x40
herald_reconciler_last_pass_timestamp_seconds{job="herald-notifier",instance="n1"} 0+60x40
herald_provider_config_errors_total{job="herald-workers",instance="w1",channel="email",provider="sendgrid"} 0x40
herald_limit_store_failures_total{job="herald-notifier",instance="n1"} 0x40
herald_grpc_server_handled_total{job="herald-notifier",instance="n1",grpc_type="unary",grpc_service="herald.v1.NotificationService",grpc_method="Send",grpc_code="OK"} 0+600x40
herald_grpc_server_handled_total{job="herald-notifier",instance="n1",grpc_type="unary",grpc_service="herald.v1.NotificationService",grpc_method="Send",grpc_code="Internal"} 0+1x40
herald_grpc_server_handled_total{job="herald-notifier",instance="n1",grpc_type="unary",grpc_service="herald.v1.NotificationService",grpc_method="Send",grpc_code="InvalidArgument"} 0+300x40
`,
		expect: []expect{{at: 35 * time.Minute, alert: "*"}},
	},
}

func TestAlertScenarios(t *testing.T) {
	fileOrder := map[string]int{}
	for i, g := range parseRules(t).Groups {
		fileOrder[g.Name] = i
	}
	for _, sc := range alertScenarios {
		t.Run(sc.name, func(t *testing.T) {
			runScenario(t, sc, fileOrder)
		})
	}
}

func runScenario(t *testing.T, sc alertScenario, fileOrder map[string]int) {
	var load strings.Builder
	load.WriteString("load 1m\n")
	for _, l := range strings.Split(strings.TrimSpace(sc.series), "\n") {
		load.WriteString("  " + l + "\n")
	}
	suite, err := promqltest.NewLazyLoader(load.String(), promqltest.LazyLoaderOpts{
		EnableAtModifier: true, EnableNegativeOffset: true, Parser: newParser(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := suite.Close(); err != nil {
			t.Error(err)
		}
	})
	suite.SubqueryInterval = time.Minute

	m := rules.NewManager(&rules.ManagerOptions{
		QueryFunc:    rules.EngineQueryFunc(suite.QueryEngine(), suite.Storage()),
		AppendableV2: suite.Storage(),
		Context:      context.Background(),
		NotifyFunc:   func(context.Context, string, ...*rules.Alert) {},
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		Parser:       newParser(),
	})
	loaded, errs := m.LoadGroups(time.Minute, labels.EmptyLabels(), "", nil, false, rulesFile)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	groups := make([]*rules.Group, 0, len(loaded))
	for _, g := range loaded {
		groups = append(groups, g)
	}
	// Recording rules first, as the file lists them.
	sort.Slice(groups, func(i, j int) bool { return fileOrder[groups[i].Name()] < fileOrder[groups[j].Name()] })
	for _, g := range groups {
		for _, r := range g.Rules() {
			if ar, ok := r.(*rules.AlertingRule); ok {
				ar.SetRestored(true)
			}
		}
	}

	byTime := map[time.Duration][]expect{}
	var end time.Duration
	for _, e := range sc.expect {
		byTime[e.at] = append(byTime[e.at], e)
		end = max(end, e.at)
	}
	start := time.Unix(0, 0).UTC()
	for at := time.Duration(0); at <= end; at += time.Minute {
		ts := start.Add(at)
		suite.WithSamplesTill(ts, func(err error) {
			if err != nil {
				t.Fatal(err)
			}
			for _, g := range groups {
				g.Eval(suite.Context(), ts)
				for _, r := range g.Rules() {
					if err := r.LastError(); err != nil {
						t.Fatalf("at %v: rule %s: %v", at, r.Name(), err)
					}
				}
			}
		})
		for _, e := range byTime[at] {
			checkFiring(t, groups, e)
		}
	}
}

func checkFiring(t *testing.T, groups []*rules.Group, e expect) {
	t.Helper()
	var got []string
	for _, g := range groups {
		for _, r := range g.Rules() {
			ar, ok := r.(*rules.AlertingRule)
			if !ok || (e.alert != "*" && ar.Name() != e.alert) {
				continue
			}
			for _, a := range ar.ActiveAlerts() {
				if a.State != rules.StateFiring {
					continue
				}
				a.Annotations.Range(func(l labels.Label) {
					if strings.Contains(l.Value, "<no value>") || strings.Contains(l.Value, "error expanding") || strings.Contains(l.Value, "{{") {
						t.Errorf("at %v: %s: annotation %s did not expand: %q", e.at, ar.Name(), l.Name, l.Value)
					}
				})
				b := labels.NewBuilder(a.Labels)
				if e.alert != "*" {
					b.Del(labels.AlertName)
				}
				b.Del("severity")
				got = append(got, b.Labels().String())
			}
		}
	}
	var want []string
	for _, l := range e.firing {
		want = append(want, labels.FromMap(l).String())
	}
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("at %v, %s firing:\n got %v\nwant %v", e.at, e.alert, got, want)
	}
}
