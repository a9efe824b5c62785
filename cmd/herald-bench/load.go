package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/heraldhq/herald/internal/appkey"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

// The channels a send can target, in the order --mix names them.
var channelNames = []string{"email", "sms", "ios", "android"}

var channelOf = map[string]heraldv1.Channel{
	"email": heraldv1.Channel_CHANNEL_EMAIL, "sms": heraldv1.Channel_CHANNEL_SMS,
	"ios": heraldv1.Channel_CHANNEL_IOS, "android": heraldv1.Channel_CHANNEL_ANDROID,
}

// parseMix reads "email=1,sms=1,ios=1,android=1" into a cycle of channels in which each
// appears as often as its weight, spread evenly (smooth weighted round robin).
func parseMix(s string) ([]heraldv1.Channel, error) {
	weights := map[heraldv1.Channel]int{}
	var order []heraldv1.Channel
	for part := range strings.SplitSeq(s, ",") {
		name, w, ok := strings.Cut(strings.TrimSpace(part), "=")
		ch, known := channelOf[name]
		n, err := strconv.Atoi(w)
		if !ok || !known || err != nil || n < 0 || n > 1000 {
			return nil, fmt.Errorf("--mix: %q is not channel=weight with a channel among %v and a weight of 0 to 1000", part, channelNames)
		}
		if _, dup := weights[ch]; !dup {
			order = append(order, ch)
		}
		weights[ch] = n
	}
	total := 0
	for _, w := range weights {
		total += w
	}
	if total == 0 {
		return nil, fmt.Errorf("--mix: every weight is 0")
	}
	cycle := make([]heraldv1.Channel, 0, total)
	current := map[heraldv1.Channel]int{}
	for range total {
		var best heraldv1.Channel
		for _, ch := range order {
			current[ch] += weights[ch]
			if best == 0 || current[ch] > current[best] {
				best = ch
			}
		}
		current[best] -= total
		cycle = append(cycle, best)
	}
	return cycle, nil
}

// templateNames are the two templates the benchmark creates and half of its sends use.
var templateNames = [2]string{"bench.welcome", "bench.receipt"}

var templates = [2]*heraldv1.TemplateParts{{
	PushTitle:    "Welcome, {{.name}}",
	PushBody:     "Your sign-in code is {{.code}}.",
	SmsBody:      "Hi {{.name}}, your sign-in code is {{.code}}.",
	EmailSubject: "Welcome to Herald, {{.name}}",
	EmailHtml:    "<p>Hello {{.name}},</p><p>your sign-in code is <b>{{.code}}</b>.</p>",
	EmailText:    "Hello {{.name}},\n\nyour sign-in code is {{.code}}.\n",
}, {
	PushTitle:    "Receipt {{.code}}",
	PushBody:     "{{.name}}, we received your payment of {{.amount}}.",
	SmsBody:      "{{.name}}, we received your payment of {{.amount}} (receipt {{.code}}).",
	EmailSubject: "Your receipt {{.code}}",
	EmailHtml:    "<p>{{.name}}, we received your payment of <b>{{.amount}}</b>.</p><p>Receipt {{.code}}</p>",
	EmailText:    "{{.name}}, we received your payment of {{.amount}}.\nReceipt {{.code}}\n",
}}

// workload makes the requests: send i goes to channel cycle[i % len(cycle)] at an address of
// its own, and uses a stored template or inline content.
type workload struct {
	cycle         []heraldv1.Channel
	templateShare float64
	// offset is added to every send's number, so that the warm-up's addresses differ from the
	// measured run's.
	offset int64
}

// golden is the fractional part of the golden ratio: multiples of it mod 1 spread evenly over
// [0, 1), which picks the sends that use templates without favouring any channel.
const golden = 0.6180339887498949

func (w *workload) usesTemplate(i int64) bool {
	round := i / int64(len(w.cycle))
	return math.Mod(float64(round)*golden, 1) < w.templateShare
}

func (w *workload) channel(i int64) heraldv1.Channel { return w.cycle[i%int64(len(w.cycle))] }

// areaCodes give phone numbers of their own to 7 × 8,000,000 sends.
var areaCodes = []string{"212", "213", "310", "312", "415", "646", "718"}

// phone returns send i's number: valid, and unique per send up to 56 million sends.
func phone(i int64) string {
	area := areaCodes[(i/8_000_000)%int64(len(areaCodes))]
	return fmt.Sprintf("+1%s%03d%04d", area, 200+(i/10_000)%800, i%10_000)
}

// recipient returns send i's address recipient, and its SMS number (or "").
func (w *workload) recipient(i int64) (*heraldv1.Recipient, string) {
	i += w.offset
	a := &heraldv1.Address{}
	var number string
	switch w.channel(i) {
	case heraldv1.Channel_CHANNEL_EMAIL:
		a.Email = fmt.Sprintf("bench%d@example.com", i)
	case heraldv1.Channel_CHANNEL_SMS:
		number = phone(i)
		a.Phone = number
	case heraldv1.Channel_CHANNEL_IOS:
		sum := sha256.Sum256([]byte(strconv.FormatInt(i, 10)))
		a.IosTokens = []string{hex.EncodeToString(sum[:])}
	case heraldv1.Channel_CHANNEL_ANDROID:
		a.AndroidTokens = []string{fmt.Sprintf("bench-fcm:%030d_APA91b", i)}
	}
	return &heraldv1.Recipient{Kind: &heraldv1.Recipient_Address{Address: a}}, number
}

func templateData(i int64) *structpb.Struct {
	return &structpb.Struct{Fields: map[string]*structpb.Value{
		"name":   structpb.NewStringValue(fmt.Sprintf("Ada %d", i)),
		"code":   structpb.NewStringValue(fmt.Sprintf("%06d", i%1_000_000)),
		"amount": structpb.NewStringValue(fmt.Sprintf("$%d.%02d", 10+i%90, i%100)),
	}}
}

func inlineContent(i int64) *heraldv1.Content {
	return &heraldv1.Content{
		Title:   fmt.Sprintf("Order %d has shipped", i),
		Body:    fmt.Sprintf("Your order %d is on its way and arrives tomorrow.", i),
		Subject: fmt.Sprintf("Your order %d has shipped", i),
		Html:    fmt.Sprintf("<p>Your order <b>%d</b> is on its way and arrives tomorrow.</p>", i),
	}
}

// request returns send i and its SMS number (or "").
func (w *workload) request(i int64) (*heraldv1.SendRequest, string) {
	rcpt, number := w.recipient(i)
	i += w.offset
	req := &heraldv1.SendRequest{Recipient: rcpt, Category: "account"}
	if w.usesTemplate(i) {
		req.Message = &heraldv1.SendRequest_Template{Template: &heraldv1.TemplateRef{Name: templateNames[i%2]}}
		req.Data = templateData(i)
	} else {
		req.Message = &heraldv1.SendRequest_Content{Content: inlineContent(i)}
	}
	return req, number
}

// loadgen drives the notifier's gRPC API over several connections and records what it sent.
type loadgen struct {
	w       *workload
	t       *tracker
	conns   []*grpc.ClientConn
	clients []heraldv1.NotificationServiceClient

	sent     atomic.Int64 // calls answered OK (notifications accepted)
	failures atomic.Int64 // calls answered with an error, or recipients of a batch refused
	// until ends a timed run (runFor, and runBatches with a deadline), and inTime counts the
	// notifications accepted by then: the calls under way at the end are answered, but a rate
	// over a fixed window leaves them out, or a slow last call would stretch the window.
	until  time.Time
	inTime atomic.Int64

	mu        sync.Mutex
	latencies []int64          // per call, ns
	errors    map[string]int64 // gRPC code -> count
	firstErr  string
	notQueued map[string]int64 // "STATE reason" -> deliveries not answered QUEUED
}

func newLoadgen(addr, key string, conns int) (*loadgen, error) {
	l := &loadgen{}
	for range conns {
		// Each client gets a connection of its own: grpc.NewClient shares nothing between
		// clients, so these are separate TCP connections (and HTTP/2 flow-control windows).
		c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), appkey.Credentials(key))
		if err != nil {
			l.close()
			return nil, err
		}
		l.conns = append(l.conns, c)
		l.clients = append(l.clients, heraldv1.NewNotificationServiceClient(c))
	}
	return l, nil
}

// reset starts a phase (the warm-up, the measured run): sends come from w, and are counted
// afresh and tracked by t.
func (l *loadgen) reset(w *workload, t *tracker) {
	l.w, l.t = w, t
	l.sent.Store(0)
	l.failures.Store(0)
	l.until = time.Time{}
	l.inTime.Store(0)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.latencies, l.errors, l.firstErr, l.notQueued = nil, map[string]int64{}, "", map[string]int64{}
}

func (l *loadgen) close() {
	for _, c := range l.conns {
		c.Close()
	}
}

// createTemplates stores the two templates the sends use.
func createTemplates(ctx context.Context, conn *grpc.ClientConn) error {
	c := heraldv1.NewTemplateServiceClient(conn)
	for i, name := range templateNames {
		if _, err := c.CreateTemplate(ctx, &heraldv1.CreateTemplateRequest{Template: &heraldv1.Template{
			Name: name, Description: "herald-bench", Parts: templates[i],
		}}); err != nil {
			return fmt.Errorf("create template %s: %w", name, err)
		}
	}
	return nil
}

func (l *loadgen) fail(err error) {
	code := status.Code(err).String()
	l.failures.Add(1)
	l.mu.Lock()
	l.errors[code]++
	if l.firstErr == "" {
		l.firstErr = err.Error()
	}
	l.mu.Unlock()
}

// accepted records the deliveries of one answered send.
func (l *loadgen) accepted(res *heraldv1.SendResponse, number string, at time.Time) {
	l.sent.Add(1)
	if !l.until.IsZero() && !at.After(l.until) {
		l.inTime.Add(1)
	}
	for _, d := range res.GetDeliveries() {
		if d.GetState() != heraldv1.DeliveryState_DELIVERY_STATE_QUEUED {
			l.mu.Lock()
			l.notQueued[d.GetState().String()+" "+d.GetReason()]++
			l.mu.Unlock()
			continue
		}
		var k key
		var ok bool
		if d.GetChannel() == heraldv1.Channel_CHANNEL_SMS {
			k, ok = phoneKey(number)
		} else {
			k, ok = idKey(d.GetDeliveryId())
		}
		if !ok {
			l.fail(fmt.Errorf("unusable delivery %q on %s", d.GetDeliveryId(), d.GetChannel()))
			continue
		}
		l.t.Accept(k, at)
	}
}

func (l *loadgen) addLatencies(ns []int64) {
	l.mu.Lock()
	l.latencies = append(l.latencies, ns...)
	l.mu.Unlock()
}

const callTimeout = time.Minute

// runCount sends n notifications from c goroutines, each sending its next one as soon as the
// last is answered (closed loop).
func (l *loadgen) runCount(ctx context.Context, n int64, c int) { l.runClosed(ctx, c, n, time.Time{}) }

// runFor sends notifications from c goroutines for d, closed loop as runCount; the calls under
// way at the end are answered and counted.
func (l *loadgen) runFor(ctx context.Context, d time.Duration, c int) {
	l.runClosed(ctx, c, math.MaxInt64, time.Now().Add(d))
}

// runClosed sends notifications from c goroutines, each sending its next one as soon as the
// last is answered, until n are sent or, when until is set, until then.
func (l *loadgen) runClosed(ctx context.Context, c int, n int64, until time.Time) {
	l.until = until
	var next atomic.Int64
	var wg sync.WaitGroup
	for g := range c {
		wg.Go(func() {
			client := l.clients[g%len(l.clients)]
			var lat []int64
			if n < math.MaxInt64 {
				lat = make([]int64, 0, n/int64(c)+1)
			}
			defer func() { l.addLatencies(lat) }()
			for ctx.Err() == nil && (until.IsZero() || time.Now().Before(until)) {
				i := next.Add(1) - 1
				if i >= n {
					return
				}
				req, number := l.w.request(i)
				cctx, cancel := context.WithTimeout(ctx, callTimeout)
				began := time.Now()
				res, err := client.Send(cctx, req)
				done := time.Now()
				cancel()
				if err != nil {
					if ctx.Err() == nil {
						l.fail(err)
					}
					continue
				}
				lat = append(lat, int64(done.Sub(began)))
				l.accepted(res, number, done)
			}
		})
	}
	wg.Wait()
}

// runRate offers rate sends per second for d, open loop: send i is due at start + i/rate
// whatever became of the earlier ones, and its latency counts from when it was due, so that a
// slow answer cannot hide the sends it delayed (coordinated omission). At most maxInFlight
// calls are outstanding; past that the schedule slips, and the latencies show it.
func (l *loadgen) runRate(ctx context.Context, rate float64, d time.Duration, maxInFlight int) {
	total := int64(rate * d.Seconds())
	sem := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	var latMu sync.Mutex
	lat := make([]int64, 0, total)
	start := time.Now()
	for i := int64(0); i < total && ctx.Err() == nil; i++ {
		due := start.Add(time.Duration(float64(i) * float64(time.Second) / rate))
		if wait := time.Until(due); wait > 0 {
			select {
			case <-ctx.Done():
				continue
			case <-time.After(wait):
			}
		}
		select {
		case <-ctx.Done():
			continue
		case sem <- struct{}{}:
		}
		wg.Go(func() {
			defer func() { <-sem }()
			client := l.clients[i%int64(len(l.clients))]
			req, number := l.w.request(i)
			cctx, cancel := context.WithTimeout(ctx, callTimeout)
			res, err := client.Send(cctx, req)
			done := time.Now()
			cancel()
			if err != nil {
				if ctx.Err() == nil {
					l.fail(err)
				}
				return
			}
			latMu.Lock()
			lat = append(lat, int64(done.Sub(due)))
			latMu.Unlock()
			l.accepted(res, number, done)
		})
	}
	wg.Wait()
	l.addLatencies(lat)
}

// maxBatch is the most recipients a SendBatch call takes (the API's maximum), and how many
// each carries in backlog mode.
const maxBatch = 1000

// batchRequest returns SendBatch call b, to the recipients first to end-1 (numbered as sends
// are), and their SMS numbers (or ""). A batch shares one message, so the share of templates is
// kept across batches, not within one.
func (w *workload) batchRequest(b, first, end int64) (*heraldv1.SendBatchRequest, []string) {
	req := &heraldv1.SendBatchRequest{Category: "account"}
	if math.Mod(float64(b)*golden, 1) < w.templateShare {
		req.Message = &heraldv1.SendBatchRequest_Template{Template: &heraldv1.TemplateRef{Name: templateNames[b%2]}}
		req.Data = templateData(b)
	} else {
		req.Message = &heraldv1.SendBatchRequest_Content{Content: inlineContent(b)}
	}
	numbers := make([]string, 0, end-first)
	for i := first; i < end; i++ {
		rcpt, number := w.recipient(i)
		numbers = append(numbers, number)
		req.Recipients = append(req.Recipients, &heraldv1.BatchRecipient{Recipient: rcpt})
	}
	return req, numbers
}

// runBatches sends SendBatch calls of size recipients from c goroutines, each sending its next
// call as soon as the last is answered, until n recipients are sent or, when until is set,
// until then. A call that fails counts as a failure for each of its recipients, and so does
// each recipient the answer refuses.
func (l *loadgen) runBatches(ctx context.Context, c, size int, n int64, until time.Time) {
	l.until = until
	var next atomic.Int64
	var wg sync.WaitGroup
	for g := range c {
		wg.Go(func() {
			client := l.clients[g%len(l.clients)]
			var lat []int64
			defer func() { l.addLatencies(lat) }()
			for ctx.Err() == nil && (until.IsZero() || time.Now().Before(until)) {
				b := next.Add(1) - 1
				first := b * int64(size)
				if first >= n {
					return
				}
				req, numbers := l.w.batchRequest(b, first, min(n, first+int64(size)))
				cctx, cancel := context.WithTimeout(ctx, callTimeout)
				began := time.Now()
				res, err := client.SendBatch(cctx, req)
				done := time.Now()
				cancel()
				if err != nil {
					if ctx.Err() == nil {
						for range numbers {
							l.fail(err)
						}
					}
					continue
				}
				lat = append(lat, int64(done.Sub(began)))
				if got := len(res.GetResults()); got != len(numbers) {
					l.fail(fmt.Errorf("SendBatch of %d recipients answered %d results", len(numbers), got))
					continue
				}
				for j, r := range res.GetResults() {
					if r.GetError() != nil {
						l.fail(fmt.Errorf("batch recipient refused: %s %s", r.GetError().GetCode(), r.GetError().GetMessage()))
						continue
					}
					l.accepted(r.GetResponse(), numbers[j], done)
				}
			}
		})
	}
	wg.Wait()
}

// errorSummary describes the failed calls, or returns "".
func (l *loadgen) errorSummary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errors) == 0 {
		return ""
	}
	var parts []string
	for code, n := range l.errors {
		parts = append(parts, fmt.Sprintf("%s %d", code, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ") + "; first: " + l.firstErr
}

// notQueuedSummary describes deliveries that were not answered QUEUED, or returns "".
func (l *loadgen) notQueuedSummary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var parts []string
	for k, n := range l.notQueued {
		parts = append(parts, fmt.Sprintf("%s: %d", k, n))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}
