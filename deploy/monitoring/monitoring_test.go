// Package monitoring holds Herald's Grafana dashboard and Prometheus rules. Its tests check
// them against the metric contract that the services implement: every rule parses strictly
// and its expressions with the PromQL parser, every metric and label an expression uses is
// in the contract, the dashboard is well formed, and the alerts fire (and stay quiet) on
// synthetic series as intended.
package monitoring

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

const (
	rulesFile     = "prometheus/herald-alerts.yaml"
	dashboardFile = "grafana/herald-dashboard.json"
	readmeFile    = "README.md"
)

// contract is the metric contract between the services and deploy/monitoring: each Herald
// metric with its labels (besides the job and instance labels every target gets).
var contract = map[string][]string{
	// notifier
	"herald_notifications_accepted_total": {"category"},
	"herald_deliveries_accepted_total":    {"channel", "category"},
	"herald_deliveries_skipped_total":     {"channel", "reason"},
	"herald_accept_duration_seconds":      {}, // histogram
	"herald_rate_limited_total":           {"kind"},
	"herald_limit_store_failures_total":   {},
	"herald_reconciler_republished_total": {"channel"},
	"herald_reconciler_expired_total":     {},
	"herald_digests_sent_total":           {"channel"},
	"herald_queue_pending":                {"channel"},
	"herald_queue_in_flight":              {"channel"},
	"herald_queue_scheduled":              {"channel"},
	"herald_queue_retrying":               {"channel"},
	"herald_dead_letters":                 {"channel"},
	"herald_queue_oldest_age_seconds":     {"channel"},
	"herald_provider_events_total":        {"provider", "kind"},
	// notifier: the reconciler's liveness (a pass that hangs leaves it behind)
	"herald_reconciler_last_pass_timestamp_seconds": {},
	// notifier: short links
	"herald_link_redirects_total": {"result"},
	"herald_link_lookups_total":   {"cached"},
	"herald_link_clicks_total":    {"channel", "category", "template", "kind"},
	"herald_links_created_total":  {"channel", "category", "template"},
	// workers
	"herald_deliveries_sent_total":            {"channel", "provider"},
	"herald_deliveries_failed_total":          {"channel", "provider", "reason"},
	"herald_deliveries_retried_total":         {"channel", "provider"},
	"herald_deliveries_dead_total":            {"channel", "provider"},
	"herald_deliveries_skipped_at_send_total": {"channel", "reason"},
	"herald_provider_duration_seconds":        {"channel", "provider"}, // histogram
	"herald_accept_to_sent_seconds":           {"channel"},             // histogram
	"herald_circuit_state":                    {"channel", "provider"},
	"herald_circuit_opened_total":             {"channel", "provider"},
	"herald_provider_config_errors_total":     {"channel", "provider"},
	// workers: a channel's credentials (services/workers/route)
	"herald_route_calls_total":     {"channel", "provider", "credential", "result"},
	"herald_route_failovers_total": {"channel", "provider", "credential"},
	"herald_route_held_total":      {"channel", "provider", "credential", "reason"},
	"herald_route_circuit_state":   {"channel", "provider", "credential"},
	"herald_route_active":          {"channel", "provider", "credential"},
	// every service (internal/server): the gRPC servers' per-method metrics, and the build
	"herald_grpc_server_handled_total":    {"grpc_type", "grpc_service", "grpc_method", "grpc_code"},
	"herald_grpc_server_handling_seconds": {"grpc_type", "grpc_service", "grpc_method"}, // histogram
	"herald_build_info":                   {"version", "revision", "go_version"},
	// notifier: the in-app inbox's live feed (services/notifier/inboxfeed)
	"herald_inbox_streams": {},
	// the services that serve the HTTP/JSON API (internal/server)
	"herald_http_api_requests_total": {"method", "code"},
}

// histograms are the contract's histograms: they are queried as _bucket (with le), _sum and
// _count series, never by their base name.
var histograms = []string{
	"herald_accept_duration_seconds",
	"herald_provider_duration_seconds",
	"herald_accept_to_sent_seconds",
	"herald_grpc_server_handling_seconds",
}

// recorded are the series the rule file records, with their labels. The dashboard may use
// them too (and says so in the panel's description).
var recorded = map[string][]string{
	"herald:deliveries_outcome:rate5m": {"channel", "provider", "outcome"},
}

// targetLabels are the labels Prometheus adds to every scraped series.
var targetLabels = []string{"job", "instance"}

// herald jobs, as the scrape configuration names them.
var heraldJobs = []string{"herald-notifier", "herald-contacts", "herald-workers"}

// seriesLabels returns the labels a series of that name can have, and whether the name is
// allowed at all: a contract metric (histograms only as _bucket/_sum/_count), a recorded
// series, up, or a Go runtime or process metric (whose labels are not checked: nil).
func seriesLabels(name string) (lbls []string, ok bool) {
	if l, ok := recorded[name]; ok {
		return l, true
	}
	for _, h := range histograms {
		switch name {
		case h:
			return nil, false
		case h + "_bucket":
			return append(slices.Clone(contract[h]), "le"), true
		case h + "_sum", h + "_count":
			return contract[h], true
		}
	}
	if l, ok := contract[name]; ok {
		return l, true
	}
	if name == "up" {
		return []string{}, true
	}
	if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
		return nil, true
	}
	return nil, false
}

func newParser() parser.Parser { return parser.NewParser(parser.Options{}) }

// exprUse is what one expression uses.
type exprUse struct {
	metrics []string
}

// checkExpr parses expr and checks every selector's metric name and label matchers, and
// the labels every aggregation groups by, against the contract. where names the expression
// in errors.
func checkExpr(t *testing.T, where, expr string) exprUse {
	t.Helper()
	node, err := newParser().ParseExpr(expr)
	if err != nil {
		t.Errorf("%s: %v\n%s", where, err, expr)
		return exprUse{}
	}
	var use exprUse
	parser.Inspect(node, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			name := n.Name
			for _, m := range n.LabelMatchers {
				if m.Name == model.MetricNameLabel {
					if m.Type != labels.MatchEqual {
						t.Errorf("%s: selector %s: match metrics by their plain name, not %s", where, n, m)
					}
					name = m.Value
				}
			}
			lbls, ok := seriesLabels(name)
			if !ok {
				t.Errorf("%s: metric %q is not in the metric contract", where, name)
				return nil
			}
			use.metrics = append(use.metrics, name)
			if lbls == nil {
				return nil
			}
			for _, m := range n.LabelMatchers {
				if m.Name == model.MetricNameLabel || slices.Contains(targetLabels, m.Name) || slices.Contains(lbls, m.Name) {
					continue
				}
				t.Errorf("%s: %s has no label %q (it has %v)", where, name, m.Name, lbls)
			}
		case *parser.AggregateExpr:
			if n.Without || len(n.Grouping) == 0 {
				return nil
			}
			checkGrouping(t, where, n)
		}
		return nil
	})
	return use
}

// checkGrouping checks that the labels an aggregation keeps exist on every series it
// aggregates, unless label_replace or label_join may have made them.
func checkGrouping(t *testing.T, where string, agg *parser.AggregateExpr) {
	t.Helper()
	var names []string
	relabeled := false
	parser.Inspect(agg.Expr, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			name := n.Name
			for _, m := range n.LabelMatchers {
				if m.Name == model.MetricNameLabel {
					name = m.Value
				}
			}
			names = append(names, name)
		case *parser.Call:
			if n.Func.Name == "label_replace" || n.Func.Name == "label_join" {
				relabeled = true
			}
		}
		return nil
	})
	if relabeled {
		return
	}
	for _, name := range names {
		lbls, ok := seriesLabels(name)
		if !ok || lbls == nil {
			continue
		}
		for _, g := range agg.Grouping {
			if !slices.Contains(targetLabels, g) && !slices.Contains(lbls, g) {
				t.Errorf("%s: %s by (%s): %s has no label %q", where, agg.Op, strings.Join(agg.Grouping, ", "), name, g)
			}
		}
	}
}

func parseRules(t *testing.T) *rulefmt.RuleGroups {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	// Strict: unknown fields fail, metric and label names must be legacy-valid, and every
	// expression goes through the PromQL parser.
	groups, errs := rulefmt.ParseFile(rulesFile, false, model.LegacyValidation, newParser(), logger)
	if len(errs) > 0 {
		for _, err := range errs {
			t.Error(err)
		}
		t.FailNow()
	}
	return groups
}

func TestRulesParseStrictly(t *testing.T) {
	groups := parseRules(t)
	if len(groups.Groups) == 0 {
		t.Fatal("no rule groups")
	}
	// Parse once more as plain YAML with unknown fields refused: the file is only `groups:`,
	// so it can also be pasted under the `spec:` of a PrometheusRule.
	raw, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]any
	if err := yamlUnmarshalStrict(raw, &top); err != nil {
		t.Fatal(err)
	}
	for k := range top {
		if k != "groups" {
			t.Errorf("top-level key %q: a rule file (and a PrometheusRule spec) has only groups", k)
		}
	}
	records := map[string]bool{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				records[r.Record] = true
			}
		}
	}
	for name := range recorded {
		if !records[name] {
			t.Errorf("the test expects the recording rule %s, which the file does not define", name)
		}
	}
	for name := range records {
		if _, ok := recorded[name]; !ok {
			t.Errorf("recording rule %s: add it and its labels to `recorded` in this test", name)
		}
	}
}

// wantAlerts are the alerts the issue asks for, with the `for` each must wait.
var wantAlerts = map[string]time.Duration{
	"HeraldQueueDepthGrowing":      10 * time.Minute,
	"HeraldOldestPendingTooOld":    2 * time.Minute,
	"HeraldDeadLetter":             0,
	"HeraldProviderErrorRate":      10 * time.Minute,
	"HeraldCircuitOpen":            2 * time.Minute,
	"HeraldReconcilerRepublishing": 15 * time.Minute,
	"HeraldProviderConfigErrors":   0,
	"HeraldReconcilerStalled":      5 * time.Minute,
	"HeraldInstanceDown":           5 * time.Minute,
	"HeraldJobDown":                5 * time.Minute,
	"HeraldLimitStoreFailures":     5 * time.Minute,
	"HeraldDeliveriesExpiring":     15 * time.Minute,
	"HeraldGRPCErrorRate":          10 * time.Minute,
}

func TestAlertsAreComplete(t *testing.T) {
	groups := parseRules(t)
	readme, err := os.ReadFile(readmeFile)
	if err != nil {
		t.Fatal(err)
	}
	anchors := markdownAnchors(string(readme))
	seen := map[string]bool{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			name := r.Alert
			if seen[name] {
				t.Errorf("alert %s is defined twice", name)
			}
			seen[name] = true
			wantFor, ok := wantAlerts[name]
			if !ok {
				t.Errorf("alert %s: not in this test's list of alerts; add it with its `for`", name)
			} else if time.Duration(r.For) != wantFor {
				t.Errorf("alert %s: for %v, want %v", name, time.Duration(r.For), wantFor)
			}
			switch r.Labels["severity"] {
			case "critical", "warning", "info":
			default:
				t.Errorf("alert %s: severity %q, want critical, warning or info", name, r.Labels["severity"])
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("alert %s: no %s annotation", name, a)
				}
			}
			want := "deploy/monitoring/README.md#" + strings.ToLower(name)
			if got := r.Annotations["runbook_url"]; got != want {
				t.Errorf("alert %s: runbook_url %q, want %q", name, got, want)
			}
			if !anchors[strings.ToLower(name)] {
				t.Errorf("alert %s: README.md has no section %q for its runbook", name, name)
			}
		}
	}
	for name := range wantAlerts {
		if !seen[name] {
			t.Errorf("alert %s is missing from %s", name, rulesFile)
		}
	}
}

// markdownAnchors returns the GitHub anchors of the Markdown headings in s.
func markdownAnchors(s string) map[string]bool {
	out := map[string]bool{}
	drop := regexp.MustCompile(`[^a-z0-9 _-]`)
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
		h = drop.ReplaceAllString(h, "")
		out[strings.ReplaceAll(h, " ", "-")] = true
	}
	return out
}

func TestRuleExpressionsUseTheContract(t *testing.T) {
	groups := parseRules(t)
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			name := r.Alert + r.Record
			checkExpr(t, fmt.Sprintf("%s/%s", g.Name, name), r.Expr)
		}
	}
}

// dashboard is the part of a Grafana dashboard model the tests read.
type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Definition string          `json:"definition"`
			Multi      bool            `json:"multi"`
			IncludeAll bool            `json:"includeAll"`
			Datasource *datasource     `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID          int                      `json:"id"`
	Type        string                   `json:"type"`
	Title       string                   `json:"title"`
	Datasource  *datasource              `json:"datasource"`
	GridPos     struct{ H, W, X, Y int } `json:"gridPos"`
	FieldConfig struct {
		Defaults struct {
			Unit     string            `json:"unit"`
			Mappings []json.RawMessage `json:"mappings"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Targets []struct {
		RefID        string      `json:"refId"`
		Expr         string      `json:"expr"`
		LegendFormat string      `json:"legendFormat"`
		Datasource   *datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's panels
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(raw) {
		t.Fatalf("%s is not valid JSON", dashboardFile)
	}
	var d dashboard
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// allPanels flattens rows' nested panels.
func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// grafanaVars are the values the tests put in place of the dashboard's variables before
// parsing a query as PromQL.
var grafanaVars = map[string]string{
	"__rate_interval": "5m",
	"__interval":      "1m",
	"__range":         "1h",
	"channel":         "email|sms",
	"job":             "herald-notifier|herald-workers",
}

var grafanaVar = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\$(\w+)`)

func expandVars(t *testing.T, where, expr string) string {
	t.Helper()
	return grafanaVar.ReplaceAllStringFunc(expr, func(m string) string {
		sub := grafanaVar.FindStringSubmatch(m)
		name := sub[1] + sub[2]
		v, ok := grafanaVars[name]
		if !ok {
			t.Errorf("%s: unknown dashboard variable %s", where, m)
			return m
		}
		return v
	})
}

func TestDashboard(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Error("the dashboard needs a uid and a title")
	}
	if d.SchemaVersion < 36 || d.SchemaVersion > 41 {
		t.Errorf("schemaVersion %d, want about 39", d.SchemaVersion)
	}

	vars := map[string]int{}
	for i, v := range d.Templating.List {
		vars[v.Name] = i
	}
	if i, ok := vars["datasource"]; !ok {
		t.Error("no datasource variable")
	} else if v := d.Templating.List[i]; v.Type != "datasource" || string(v.Query) != `"prometheus"` {
		t.Errorf("datasource variable: type %q query %s, want a datasource variable of type prometheus", v.Type, v.Query)
	}
	if i, ok := vars["channel"]; !ok {
		t.Error("no channel variable")
	} else {
		v := d.Templating.List[i]
		if v.Type != "query" || !v.Multi || !v.IncludeAll {
			t.Errorf("channel variable: type %q multi %v includeAll %v, want a multi-value query with All", v.Type, v.Multi, v.IncludeAll)
		}
		if !strings.Contains(string(v.Query), "label_values(herald_queue_pending, channel)") {
			t.Errorf("channel variable: query %s, want label_values(herald_queue_pending, channel)", v.Query)
		}
		if v.Datasource == nil || v.Datasource.UID != "${datasource}" {
			t.Error("channel variable: its datasource must be ${datasource}")
		}
	}

	ids := map[int]string{}
	used := map[string]bool{}
	units := map[string]bool{}
	for _, p := range allPanels(d.Panels) {
		where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if p.ID <= 0 {
			t.Errorf("%s: needs a positive id", where)
		}
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("%s: id %d is also panel %q", where, p.ID, prev)
		}
		ids[p.ID] = p.Title
		if p.Title == "" {
			t.Errorf("%s: no title", where)
		}
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X < 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("%s: gridPos %+v does not fit the 24-column grid", where, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
			t.Errorf("%s: datasource %+v, want prometheus ${datasource}", where, p.Datasource)
		}
		if p.FieldConfig.Defaults.Unit == "" {
			t.Errorf("%s: no unit", where)
		}
		units[p.FieldConfig.Defaults.Unit] = true
		if len(p.Targets) == 0 {
			t.Errorf("%s: no targets", where)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("%s: target refId %q empty or repeated", where, tg.RefID)
			}
			refs[tg.RefID] = true
			if tg.Datasource != nil && tg.Datasource.UID != "${datasource}" {
				t.Errorf("%s: target %s uses datasource %+v", where, tg.RefID, tg.Datasource)
			}
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("%s: target %s has no expression", where, tg.RefID)
				continue
			}
			twhere := fmt.Sprintf("%s target %s", where, tg.RefID)
			for _, m := range checkExpr(t, twhere, expandVars(t, twhere, tg.Expr)).metrics {
				used[m] = true
			}
		}
		if p.Type == "state-timeline" && len(p.FieldConfig.Defaults.Mappings) == 0 {
			t.Errorf("%s: a state timeline needs value mappings", where)
		}
	}
	for _, u := range []string{"s", "reqps", "short"} {
		if !units[u] {
			t.Errorf("no panel uses the unit %q", u)
		}
	}

	// Every contract metric is on the dashboard somewhere.
	var missing []string
	for name := range contract {
		found := used[name]
		if slices.Contains(histograms, name) {
			found = used[name+"_bucket"]
		}
		if !found {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("contract metrics no panel shows: %v", missing)
	}
	for _, m := range []string{"up", "go_goroutines"} {
		if !used[m] {
			t.Errorf("no panel shows %s", m)
		}
	}
}

func TestDashboardJobsMatchScrapeJobs(t *testing.T) {
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range heraldJobs {
		if !bytes.Contains(raw, []byte(j)) {
			t.Errorf("the dashboard's job variable lacks %s", j)
		}
	}
}

// TestRulesAsPrometheusRule wraps the rule file in a PrometheusRule the way README.md does
// (indented under spec:) and checks that the spec decodes strictly into the same groups.
func TestRulesAsPrometheusRule(t *testing.T) {
	raw, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var doc strings.Builder
	doc.WriteString("apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\n")
	doc.WriteString("metadata:\n  name: herald\n  labels:\n    release: kube-prometheus-stack\nspec:\n")
	for _, line := range strings.SplitAfter(string(raw), "\n") {
		if line != "" {
			doc.WriteString("  " + line)
		}
	}
	var obj struct {
		APIVersion string             `yaml:"apiVersion"`
		Kind       string             `yaml:"kind"`
		Metadata   map[string]any     `yaml:"metadata"`
		Spec       rulefmt.RuleGroups `yaml:"spec"`
	}
	if err := yamlUnmarshalStrict([]byte(doc.String()), &obj); err != nil {
		t.Fatalf("PrometheusRule: %v", err)
	}
	want := parseRules(t)
	if !reflect.DeepEqual(obj.Spec.Groups, want.Groups) {
		t.Error("the PrometheusRule's spec.groups differ from the rule file's groups")
	}
}
