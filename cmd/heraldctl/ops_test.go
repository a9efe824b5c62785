package main

import (
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/heraldhq/herald/internal/delivery"
	deliverypg "github.com/heraldhq/herald/internal/delivery/postgres"
	"github.com/heraldhq/herald/internal/natstest"
	"github.com/heraldhq/herald/internal/queue"
	"github.com/heraldhq/herald/services/notifier"
	"github.com/heraldhq/herald/services/notifier/postgres"
	nqueue "github.com/heraldhq/herald/services/notifier/queue"
	"github.com/heraldhq/herald/services/notifier/rpc"
)

// opsHarness is a notifier whose NotificationService, TemplateService and AdminService run on
// the real stores, on a private PostgreSQL, and publish to a real JetStream in-process, wired
// as services/notifier/daemon wires them. Its handles let a test move deliveries on as the
// workers and the providers would.
type opsHarness struct {
	server     []string // heraldctl's leading arguments
	sender     *notifier.Sender
	ops        *notifier.Operations
	deliveries *deliverypg.Store
	js         jetstream.JetStream
}

func opsServer(t *testing.T) *opsHarness {
	t.Helper()
	pool := notifierDB(t)
	deliveries := deliverypg.New(pool)
	t.Cleanup(deliveries.Close)
	js := natstest.JetStream(t)
	if err := queue.EnsureStreams(t.Context(), js, queue.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	store := postgres.New(pool, deliveries)
	pub, err := nqueue.NewPublisher(js.Conn(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	handoff := &notifier.Handoff{Publisher: pub, Deliveries: deliveries, Log: log}
	tmpls := &notifier.Templates{Store: store}
	cats := &notifier.Categories{Store: store}
	sender := &notifier.Sender{Store: store, Templates: tmpls, Categories: cats, Handoff: handoff, Log: log,
		RepublishAfter: time.Minute}
	t.Cleanup(sender.Close)
	ops := &notifier.Operations{Deliveries: deliveries, Store: store, Handoff: handoff, Log: log, RepublishAfter: time.Minute}
	server := serve(t, &rpc.Server{Sender: sender, Templates: tmpls, Categories: cats,
		Apps: &notifier.Apps{Store: store, Log: log}, Operations: ops})
	return &opsHarness{server: server, sender: sender, ops: ops, deliveries: deliveries, js: js}
}

// send runs `heraldctl send` with args and returns the notification's id and its deliveries'
// ids by channel.
func (h *opsHarness) send(t *testing.T, args ...string) (uuid.UUID, map[string]uuid.UUID) {
	t.Helper()
	out, err := heraldctl(t, h.server, append([]string{"send"}, args...)...)
	if err != nil {
		t.Fatalf("send %q: %v", args, err)
	}
	first, _, _ := strings.Cut(out, "\n")
	n, err := uuid.Parse(strings.TrimPrefix(first, "notification "))
	if err != nil {
		t.Fatalf("send %q printed %q", args, out)
	}
	ids := map[string]uuid.UUID{}
	for _, row := range table(t, out, "DELIVERY") {
		ids[row["CHANNEL"]] = uuid.MustParse(row["DELIVERY"])
	}
	return n, ids
}

// work claims deliveries as a worker would and records that each came to state, with reason
// and the provider's error.
func (h *opsHarness) work(t *testing.T, state delivery.State, reason, providerErr string, ids ...uuid.UUID) {
	t.Helper()
	claimed, err := h.deliveries.Claim(t.Context(), "worker-1", time.Minute, ids)
	if err != nil || len(claimed) != len(ids) {
		t.Fatalf("claimed %d of %d deliveries: %v", len(claimed), len(ids), err)
	}
	attempts := make([]delivery.Attempt, len(claimed))
	for i, d := range claimed {
		attempts[i] = delivery.Attempt{DeliveryID: d.ID, Attempt: d.Attempts, Drive: d.Drive, State: state,
			Reason: reason, Error: providerErr, Provider: "sim", Started: time.Now(), Latency: 20 * time.Millisecond}
		if state == delivery.Sent {
			attempts[i].ProviderMessageID = "sim-" + d.ID.String()
		}
	}
	if err := h.deliveries.Record(t.Context(), "worker-1", attempts); err != nil {
		t.Fatal(err)
	}
}

// published returns the ids of the deliveries published on ch's queue after sequence after,
// and the queue's last sequence.
func (h *opsHarness) published(t *testing.T, ch delivery.Channel, after uint64) ([]uuid.UUID, uint64) {
	t.Helper()
	s, last := h.stream(t, ch)
	var ids []uuid.UUID
	for seq := after + 1; seq <= last; seq++ {
		m, err := s.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatalf("%s message %d: %v", ch, seq, err)
		}
		batch, err := queue.ParseBatch(m.Data)
		if err != nil {
			t.Fatalf("%s message %d: %v", ch, seq, err)
		}
		ids = append(ids, batch...)
	}
	return ids, last
}

// stream returns channel ch's queue and its last sequence.
func (h *opsHarness) stream(t *testing.T, ch delivery.Channel) (jetstream.Stream, uint64) {
	t.Helper()
	s, err := h.js.Stream(t.Context(), queue.Stream(ch))
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return s, info.State.LastSeq
}

// lastSeqs returns each channel's queue's last sequence.
func (h *opsHarness) lastSeqs(t *testing.T) map[delivery.Channel]uint64 {
	t.Helper()
	seqs := map[delivery.Channel]uint64{}
	for _, ch := range delivery.Channels {
		_, seqs[ch] = h.stream(t, ch)
	}
	return seqs
}

// state returns a delivery's state, attempts and drive, as the store keeps them.
func (h *opsHarness) state(t *testing.T, notification, id uuid.UUID) delivery.Delivery {
	t.Helper()
	ds, err := h.deliveries.OfNotification(t.Context(), notification)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if d.ID == id {
			return d
		}
	}
	t.Fatalf("notification %s has no delivery %s", notification, id)
	return delivery.Delivery{}
}

var column = regexp.MustCompile(`\S+( \S+)*`)

// table reads the table heraldctl printed whose header line starts with first into rows of
// cells by column name. tabwriter starts every cell of a column where its header starts, and
// puts two spaces or more between columns, so a cell may hold single spaces.
func table(t *testing.T, out, first string) []map[string]string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	start := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, first) })
	if start < 0 {
		t.Fatalf("no table with a header starting %q in\n%s", first, out)
	}
	header := lines[start]
	cols := column.FindAllStringIndex(header, -1)
	var rows []map[string]string
	for _, l := range lines[start+1:] {
		row := map[string]string{}
		for i, c := range cols {
			end := len(l)
			if i+1 < len(cols) {
				end = min(cols[i+1][0], len(l))
			}
			if c[0] < end {
				row[header[c[0]:c[1]]] = strings.TrimSpace(l[c[0]:end])
			} else {
				row[header[c[0]:c[1]]] = ""
			}
		}
		rows = append(rows, row)
	}
	return rows
}

// deadLetters runs `heraldctl dlq list` with args and returns its rows by delivery id, in the
// order printed.
func deadLetters(t *testing.T, h *opsHarness, args ...string) ([]string, map[string]map[string]string) {
	t.Helper()
	out, err := heraldctl(t, h.server, append([]string{"dlq", "list"}, args...)...)
	if err != nil {
		t.Fatalf("dlq list %q: %v", args, err)
	}
	if header := strings.Fields(strings.SplitN(out, "\n", 2)[0]); !slices.Equal(header,
		[]string{"DELIVERY", "NOTIFICATION", "CHANNEL", "CATEGORY", "ATTEMPTS", "REASON", "LAST", "ERROR", "DIED"}) {
		t.Fatalf("dlq list %q header: %q", args, header)
	}
	var order []string
	rows := map[string]map[string]string{}
	for _, row := range table(t, out, "DELIVERY") {
		order = append(order, row["DELIVERY"])
		rows[row["DELIVERY"]] = row
	}
	return order, rows
}

func sortedIDs(ids []uuid.UUID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.String()
	}
	slices.Sort(out)
	return out
}

// TestDeadLetters runs `heraldctl dlq list` and `dlq redrive` on dead letters the workers'
// transitions made: what each column shows, the filters, and that a re-driven delivery is
// queued again in PostgreSQL and published on its channel's queue.
func TestDeadLetters(t *testing.T) {
	h := opsServer(t)
	start := time.Now()
	n1, d1 := h.send(t, "--email", "ann@example.com", "--phone", "+14155550100", "--subject", "Invoice", "--body", "Your invoice")
	n2, d2 := h.send(t, "--email", "bob@example.com", "--subject", "Invoice", "--body", "Your invoice")
	_, d3 := h.send(t, "--category", "marketing", "--email", "cy@example.com", "--subject", "Sale", "--body", "Today only")
	n4, d4 := h.send(t, "--email", "dee@example.com", "--subject", "Invoice", "--body", "Your invoice")
	h.work(t, delivery.Dead, "provider_unavailable", "transient: 503 Service Unavailable", d1["email"], d2["email"])
	h.work(t, delivery.Dead, "provider_error", "connection reset by peer", d1["sms"])
	h.work(t, delivery.Dead, "provider_error", "connection reset by peer", d3["email"])
	h.work(t, delivery.Sent, "", "", d4["email"]) // not a dead letter: never listed, never re-driven

	order, rows := deadLetters(t, h)
	want := sortedIDs([]uuid.UUID{d1["email"], d1["sms"], d2["email"], d3["email"]})
	if !slices.Equal(order, want) {
		t.Fatalf("dlq list shows %v, want the dead letters in id order %v", order, want)
	}
	row := rows[d1["email"].String()]
	for col, want := range map[string]string{"NOTIFICATION": n1.String(), "CHANNEL": "email", "CATEGORY": "account",
		"ATTEMPTS": "1", "REASON": "provider_unavailable", "LAST ERROR": "transient: 503 Service Unavailable"} {
		if row[col] != want {
			t.Errorf("dlq list: %s of %s is %q, want %q", col, d1["email"], row[col], want)
		}
	}
	if died, err := time.ParseInLocation(time.DateTime, row["DIED"], time.Local); err != nil ||
		died.Before(start.Truncate(time.Second)) || died.After(time.Now()) {
		t.Errorf("dlq list: DIED %q (%v), want the time the delivery died", row["DIED"], err)
	}
	if r := rows[d3["email"].String()]; r["CATEGORY"] != "marketing" || r["REASON"] != "provider_error" || r["LAST ERROR"] != "connection reset by peer" {
		t.Errorf("dlq list: row of %s is %v", d3["email"], r)
	}

	for _, tc := range []struct {
		args []string
		want []uuid.UUID
	}{
		{[]string{"--channel", "sms"}, []uuid.UUID{d1["sms"]}},
		{[]string{"--reason", "provider_unavailable"}, []uuid.UUID{d1["email"], d2["email"]}},
		{[]string{"--channel", "email", "--reason", "provider_error"}, []uuid.UUID{d3["email"]}},
		{[]string{"--channel", "ios"}, nil},
		{[]string{"--reason", "nothing_like_it"}, nil},
	} {
		if order, _ := deadLetters(t, h, tc.args...); !slices.Equal(order, sortedIDs(tc.want)) {
			t.Errorf("dlq list %q shows %v, want %v", tc.args, order, sortedIDs(tc.want))
		}
	}
	if _, err := heraldctl(t, h.server, "dlq", "list", "--channel", "pigeon"); err == nil {
		t.Error("dlq list --channel pigeon succeeded")
	}

	// Nothing selected is refused, so that a forgotten filter never re-sends every dead letter.
	if _, err := heraldctl(t, h.server, "dlq", "redrive"); status.Code(err) != codes.InvalidArgument {
		t.Errorf("dlq redrive with no selection: %v, want InvalidArgument", err)
	}

	redrive := func(args []string, want ...uuid.UUID) {
		t.Helper()
		seqs := h.lastSeqs(t)
		out, err := heraldctl(t, h.server, append([]string{"dlq", "redrive"}, args...)...)
		if wantOut := fmt.Sprintf("re-drove %d dead letters\n", len(want)); err != nil || out != wantOut {
			t.Fatalf("dlq redrive %q = %q, %v; want %q", args, out, err, wantOut)
		}
		var got []uuid.UUID
		for _, ch := range delivery.Channels {
			ids, _ := h.published(t, ch, seqs[ch])
			for _, id := range ids {
				if !slices.ContainsFunc(want, func(w uuid.UUID) bool { return w == id }) {
					t.Errorf("dlq redrive %q published %s on %s, which it did not re-drive", args, id, ch)
				}
			}
			got = append(got, ids...)
		}
		if !slices.Equal(sortedIDs(got), sortedIDs(want)) {
			t.Errorf("dlq redrive %q published %v, want %v", args, sortedIDs(got), sortedIDs(want))
		}
	}
	redrive([]string{d2["email"].String()}, d2["email"])
	if d := h.state(t, n2, d2["email"]); d.State != delivery.Queued || d.Attempts != 0 || d.Drive != 1 || d.Reason != "" {
		t.Errorf("re-driven delivery: state %s, attempts %d, drive %d, reason %q; want queued, in a new drive (1) with no attempts",
			d.State, d.Attempts, d.Drive, d.Reason)
	}
	redrive([]string{"--channel", "sms"}, d1["sms"])
	redrive([]string{"--reason", "provider_unavailable"}, d1["email"]) // d2's is queued already
	redrive([]string{d2["email"].String()})                            // no longer dead: nothing to do
	if order, _ := deadLetters(t, h); !slices.Equal(order, []string{d3["email"].String()}) {
		t.Errorf("dead letters left: %v, want only %s", order, d3["email"])
	}
	redrive([]string{"--all"}, d3["email"])
	redrive([]string{"--all"})
	for _, id := range []uuid.UUID{d1["email"], d1["sms"]} {
		if d := h.state(t, n1, id); d.State != delivery.Queued || d.Drive != 1 {
			t.Errorf("delivery %s: %s in drive %d after its re-drive, want queued in drive 1", id, d.State, d.Drive)
		}
	}
	if d := h.state(t, n4, d4["email"]); d.State != delivery.Sent || d.Drive != 0 {
		t.Errorf("the sent delivery is %s in drive %d: a re-drive touched it", d.State, d.Drive)
	}
}

// TestDeadLettersPaging: dlq list reads every page (500 dead letters a page) and redrive --all
// re-drives them all.
func TestDeadLettersPaging(t *testing.T) {
	h := opsServer(t)
	const n = 501
	reqs := make([]*notifier.SendRequest, n)
	for i := range reqs {
		reqs[i] = &notifier.SendRequest{Address: &notifier.Address{Email: fmt.Sprintf("user%d@example.com", i)},
			Category: "account", Content: &notifier.Content{Subject: "Hello", Body: "Hi"}}
	}
	results, err := h.sender.SendBatch(t.Context(), operator, reqs)
	if err != nil {
		t.Fatal(err)
	}
	var ids []uuid.UUID
	for _, r := range results {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		ids = append(ids, r.Result.Notification.Deliveries[0].ID)
	}
	h.work(t, delivery.Dead, "provider_unavailable", "transient: 503", ids...)

	order, _ := deadLetters(t, h)
	if !slices.Equal(order, sortedIDs(ids)) {
		t.Errorf("dlq list shows %d dead letters, want all %d in id order", len(order), n)
	}
	seq := h.lastSeqs(t)[delivery.Email]
	if out, err := heraldctl(t, h.server, "dlq", "redrive", "--all"); err != nil || out != fmt.Sprintf("re-drove %d dead letters\n", n) {
		t.Fatalf("dlq redrive --all = %q, %v", out, err)
	}
	if got, _ := h.published(t, delivery.Email, seq); !slices.Equal(sortedIDs(got), sortedIDs(ids)) {
		t.Errorf("redrive --all published %d ids, want the %d dead letters", len(got), n)
	}
	if order, _ := deadLetters(t, h); len(order) != 0 {
		t.Errorf("%d dead letters left after redrive --all", len(order))
	}
}

// TestStats runs `heraldctl stats` on deliveries the workers' transitions, the providers'
// events and the apps' engagement reports moved on: the counts per template, category and
// channel, the rates, and the period.
func TestStats(t *testing.T) {
	h := opsServer(t)
	if _, err := heraldctl(t, h.server, "templates", "apply", "-f", "../../examples/templates"); err != nil {
		t.Fatal(err)
	}
	welcome := []string{"--template", "welcome", "--data", `{"name": "Ana", "app": "Herald", "setup_url": "https://herald.example/setup"}`}
	inline := []string{"--subject", "Sale", "--body", "Today only"}
	_, a := h.send(t, append(welcome, "--email", "ann@example.com", "--phone", "+14155550100")...)
	_, b := h.send(t, append(welcome, "--email", "bob@example.com", "--channels", "email,sms")...) // no phone: sms skipped
	_, e := h.send(t, append(welcome, "--email", "eve@example.com")...)
	_, c := h.send(t, append(inline, "--category", "marketing", "--email", "cy@example.com")...)
	_, d := h.send(t, append(inline, "--category", "marketing", "--email", "dee@example.com")...)
	h.send(t, append(inline, "--category", "marketing", "--email", "fay@example.com")...) // still queued

	h.work(t, delivery.Sent, "", "", a["email"], a["sms"], e["email"], c["email"])
	h.work(t, delivery.Failed, "invalid_address", "550 no such user", b["email"])
	h.work(t, delivery.Dead, "provider_unavailable", "transient: 503", d["email"])
	var events []delivery.Event
	for _, id := range []uuid.UUID{a["email"], c["email"]} {
		events = append(events, delivery.Event{DeliveryID: id, State: delivery.Delivered, Provider: "sim",
			EventID: "ev-" + id.String(), OccurredAt: time.Now()})
	}
	if err := h.deliveries.Settle(t.Context(), events); err != nil {
		t.Fatal(err)
	}
	for id, kinds := range map[uuid.UUID][]notifier.Engagement{
		a["email"]: {notifier.Opened, notifier.Clicked},
		c["email"]: {notifier.Opened},
	} {
		for _, k := range kinds {
			if ok, err := h.ops.TrackEvent(t.Context(), operator, id, k, time.Now()); err != nil || !ok {
				t.Fatalf("TrackEvent %s %s = %v, %v", id, k, ok, err)
			}
		}
	}

	// One more notification after a mark: a period that starts at the mark counts it alone.
	time.Sleep(500 * time.Millisecond)
	mark := time.Now()
	time.Sleep(500 * time.Millisecond)
	h.send(t, "--category", "security", "--phone", "+14155550111", "--body", "New sign-in")
	since := []string{"(inline)", "security", "sms", "0", "0", "0", "0", "0", "0", "-", "-", "-"}
	rows := statsRows(t, h, "--period", time.Since(mark).String())
	if len(rows) != 1 || !slices.Equal(rows[0], since) {
		t.Errorf("stats since the mark:\n%v\nwant\n%v", rows, since)
	}

	want := [][]string{
		// TEMPLATE CATEGORY CHANNEL SENT DELIVERED OPENED CLICKED FAILED SKIPPED, then the
		// delivery, open and click rates of the sent.
		{"(inline)", "marketing", "email", "1", "1", "1", "0", "1", "0", "100.0%", "100.0%", "0.0%"},
		since,
		{"welcome", "account", "email", "2", "1", "1", "1", "1", "0", "50.0%", "50.0%", "50.0%"},
		{"welcome", "account", "sms", "1", "0", "0", "0", "0", "1", "0.0%", "0.0%", "0.0%"},
	}
	if rows := statsRows(t, h); !slices.EqualFunc(rows, want, slices.Equal) {
		t.Errorf("stats (24h):\n%v\nwant\n%v", rows, want)
	}

	for _, period := range []string{"0s", "745h"} {
		if _, err := heraldctl(t, h.server, "stats", "--period", period); status.Code(err) != codes.InvalidArgument ||
			!strings.Contains(err.Error(), "period") {
			t.Errorf("stats --period %s: %v, want InvalidArgument naming the period", period, err)
		}
	}
}

// statsRows runs `heraldctl stats` with args and returns its rows' cells.
func statsRows(t *testing.T, h *opsHarness, args ...string) [][]string {
	t.Helper()
	out, err := heraldctl(t, h.server, append([]string{"stats"}, args...)...)
	if err != nil {
		t.Fatalf("stats %q: %v", args, err)
	}
	cols := []string{"TEMPLATE", "CATEGORY", "CHANNEL", "SENT", "DELIVERED", "OPENED", "CLICKED", "FAILED", "SKIPPED",
		"DELIVERY RATE", "OPEN RATE", "CLICK RATE"}
	if header := column.FindAllString(strings.SplitN(out, "\n", 2)[0], -1); !slices.Equal(header, cols) {
		t.Fatalf("stats header %q, want %q", header, cols)
	}
	var rows [][]string
	for _, row := range table(t, out, "TEMPLATE") {
		cells := make([]string, len(cols))
		for i, c := range cols {
			cells[i] = row[c]
		}
		rows = append(rows, cells)
	}
	return rows
}
