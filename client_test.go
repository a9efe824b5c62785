package herald

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/heraldhq/herald/internal/server"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

// testKey has the shape of an app key; the fake takes any.
const testKey = "hk_abcdefghijklmnop_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"

// call is one request as the fake received it.
type call struct {
	method   string
	req      proto.Message
	auth     string
	deadline time.Duration // left when it arrived; 0 without one
}

// fake is a notifier and contacts service that records every call and answers the errors of
// fail, one per call, before answering as a server would.
type fake struct {
	heraldv1.UnimplementedNotificationServiceServer
	heraldv1.UnimplementedTemplateServiceServer
	heraldv1.UnimplementedContactsServiceServer

	mu    sync.Mutex
	fail  []error
	calls []call
	seen  map[string]bool // idempotency keys
	// states are the delivery states GetNotification answers, one list per call; the last
	// one is repeated.
	states [][]heraldv1.DeliveryState
}

var (
	_ heraldv1.NotificationServiceServer = (*fake)(nil)
	_ heraldv1.TemplateServiceServer     = (*fake)(nil)
	_ heraldv1.ContactsServiceServer     = (*fake)(nil)
)

// startFake serves a fake on a loopback port until the test ends and returns its address.
func startFake(t *testing.T, f *fake) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	heraldv1.RegisterNotificationServiceServer(srv, f)
	heraldv1.RegisterTemplateServiceServer(srv, f)
	heraldv1.RegisterContactsServiceServer(srv, f)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// record notes a call, and returns the next error to answer, if any.
func (f *fake) record(ctx context.Context, req proto.Message) error {
	c := call{req: proto.Clone(req)}
	c.method, _ = grpc.Method(ctx)
	md, _ := metadata.FromIncomingContext(ctx)
	c.auth = strings.Join(md.Get("authorization"), ",")
	if d, ok := ctx.Deadline(); ok {
		c.deadline = time.Until(d)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
	if len(f.fail) == 0 {
		return nil
	}
	err := f.fail[0]
	f.fail = f.fail[1:]
	return err
}

func (f *fake) recorded() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.calls...)
}

// duplicate marks key seen and reports whether it was before.
func (f *fake) duplicate(key string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.seen == nil {
		f.seen = map[string]bool{}
	}
	dup := f.seen[key]
	f.seen[key] = true
	return dup
}

// Send acts before it fails, as a server whose answer is lost does.
func (f *fake) Send(ctx context.Context, req *heraldv1.SendRequest) (*heraldv1.SendResponse, error) {
	dup := f.duplicate(req.IdempotencyKey)
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return &heraldv1.SendResponse{NotificationId: "n1", Duplicate: dup}, nil
}

func (f *fake) SendBatch(ctx context.Context, req *heraldv1.SendBatchRequest) (*heraldv1.SendBatchResponse, error) {
	res := &heraldv1.SendBatchResponse{}
	for _, r := range req.Recipients {
		res.Results = append(res.Results, &heraldv1.BatchResult{
			Response: &heraldv1.SendResponse{NotificationId: "n-" + r.IdempotencyKey, Duplicate: f.duplicate(r.IdempotencyKey)},
		})
	}
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return res, nil
}

func (f *fake) GetNotification(ctx context.Context, req *heraldv1.GetNotificationRequest) (*heraldv1.GetNotificationResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n := &heraldv1.Notification{NotificationId: req.NotificationId}
	states := f.states[0]
	if len(f.states) > 1 {
		f.states = f.states[1:]
	}
	for _, s := range states {
		n.Deliveries = append(n.Deliveries, &heraldv1.Delivery{State: s})
	}
	return &heraldv1.GetNotificationResponse{Notification: n}, nil
}

func (f *fake) CreateTemplate(ctx context.Context, req *heraldv1.CreateTemplateRequest) (*heraldv1.CreateTemplateResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return &heraldv1.CreateTemplateResponse{}, nil
}

func (f *fake) GetTemplate(ctx context.Context, req *heraldv1.GetTemplateRequest) (*heraldv1.GetTemplateResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return &heraldv1.GetTemplateResponse{}, nil
}

func (f *fake) GetUser(ctx context.Context, req *heraldv1.GetUserRequest) (*heraldv1.GetUserResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return &heraldv1.GetUserResponse{}, nil
}

// sleeps records the waits of a client made by newClient, which spends none of them.
type sleeps struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (s *sleeps) get() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.waits...)
}

// newClient returns a client of addr, closed when the test ends, whose sleeps are recorded
// and not spent and whose backoff jitter always picks the longest wait.
func newClient(t *testing.T, addr string, opts ...Option) (*Client, *sleeps) {
	t.Helper()
	s := &sleeps{}
	record := func(o *options) {
		o.retry.sleep = func(ctx context.Context, d time.Duration) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.waits = append(s.waits, d)
			return ctx.Err()
		}
		o.retry.jitter = func(limit time.Duration) time.Duration { return limit }
	}
	c, err := NewClient(addr, testKey, append([]Option{record}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, s
}

func unavailable() error { return status.Error(codes.Unavailable, "connection refused") }

// rateLimited is the notifier's answer to an app over its request rate.
func rateLimited(t *testing.T, retry time.Duration) error {
	t.Helper()
	st, err := status.New(codes.ResourceExhausted, "app is over its request rate").
		WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(retry)})
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

func emailRequest() *heraldv1.SendRequest {
	return &heraldv1.SendRequest{
		Recipient: &heraldv1.Recipient{Kind: &heraldv1.Recipient_Address{Address: &heraldv1.Address{Email: "ada@example.com"}}},
		Category:  "account",
		Message:   &heraldv1.SendRequest_Content{Content: &heraldv1.Content{Subject: "Hi", Body: "Hello"}},
	}
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestSendRetries sends through answers the client should retry, and checks the waits, that
// every attempt carried the same generated key, and that the caller's request is unchanged.
func TestSendRetries(t *testing.T) {
	for _, tc := range []struct {
		name      string
		fail      func(t *testing.T) []error
		wantWaits []time.Duration
	}{{
		name:      "unavailable backs off",
		fail:      func(*testing.T) []error { return []error{unavailable(), unavailable(), unavailable()} },
		wantWaits: []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond},
	}, {
		name: "rate limited waits the RetryInfo delay",
		fail: func(t *testing.T) []error {
			return []error{rateLimited(t, 1500*time.Millisecond), rateLimited(t, 250*time.Millisecond)}
		},
		wantWaits: []time.Duration{1500 * time.Millisecond, 250 * time.Millisecond},
	}, {
		name: "unavailable with RetryInfo waits its delay",
		fail: func(t *testing.T) []error {
			st, _ := status.New(codes.Unavailable, "draining").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(3 * time.Second)})
			return []error{st.Err()}
		},
		wantWaits: []time.Duration{3 * time.Second},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fake{fail: tc.fail(t)}
			c, s := newClient(t, startFake(t, f), WithTimeout(time.Hour))
			req := emailRequest()
			before := proto.Clone(req)

			res, err := c.Send(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.get(); !equalDurations(got, tc.wantWaits) {
				t.Errorf("waits %v, want %v", got, tc.wantWaits)
			}
			calls := f.recorded()
			if len(calls) != len(tc.wantWaits)+1 {
				t.Fatalf("%d attempts, want %d", len(calls), len(tc.wantWaits)+1)
			}
			key := calls[0].req.(*heraldv1.SendRequest).IdempotencyKey
			if key == "" {
				t.Fatal("the first attempt carried no idempotency key")
			}
			for i, c := range calls {
				if got := c.req.(*heraldv1.SendRequest).IdempotencyKey; got != key {
					t.Errorf("attempt %d carried key %q, want %q as the first", i+1, got, key)
				}
			}
			if !proto.Equal(req, before) {
				t.Errorf("the caller's request became %v", req)
			}
			// Every attempt but the first found the key of the first: the server created the
			// notification once, for this call.
			if res.Duplicate {
				t.Error("the answer says Duplicate for a key the client made")
			}
		})
	}
}

// TestNotRetried checks the answers that end a call at once.
func TestNotRetried(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail func(t *testing.T) error
		call func(ctx context.Context, c *Client) error
		want codes.Code
	}{{
		name: "CreateTemplate on unavailable",
		fail: func(*testing.T) error { return unavailable() },
		call: func(ctx context.Context, c *Client) error {
			_, err := c.Templates().CreateTemplate(ctx, &heraldv1.CreateTemplateRequest{})
			return err
		},
		want: codes.Unavailable,
	}, {
		name: "resource exhausted without RetryInfo",
		fail: func(*testing.T) error { return status.Error(codes.ResourceExhausted, "quota") },
		call: func(ctx context.Context, c *Client) error { _, err := c.Send(ctx, emailRequest()); return err },
		want: codes.ResourceExhausted,
	}, {
		name: "invalid argument",
		fail: func(*testing.T) error { return status.Error(codes.InvalidArgument, "category: unknown") },
		call: func(ctx context.Context, c *Client) error { _, err := c.Send(ctx, emailRequest()); return err },
		want: codes.InvalidArgument,
	}, {
		name: "RetryInfo past the context's deadline",
		fail: func(t *testing.T) error { return rateLimited(t, time.Hour) },
		call: func(ctx context.Context, c *Client) error {
			ctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			_, err := c.Send(ctx, emailRequest())
			return err
		},
		want: codes.ResourceExhausted,
	}, {
		name: "RetryInfo past the default deadline",
		fail: func(t *testing.T) error { return rateLimited(t, 11*time.Second) }, // the default is 10 s
		call: func(ctx context.Context, c *Client) error { _, err := c.Send(ctx, emailRequest()); return err },
		want: codes.ResourceExhausted,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fake{fail: []error{tc.fail(t)}}
			c, s := newClient(t, startFake(t, f))
			err := tc.call(context.Background(), c)
			if status.Code(err) != tc.want {
				t.Errorf("error %v, want %s", err, tc.want)
			}
			if n := len(f.recorded()); n != 1 {
				t.Errorf("%d attempts, want 1", n)
			}
			if w := s.get(); len(w) != 0 {
				t.Errorf("waited %v, want no wait", w)
			}
		})
	}
}

// TestRetriesRetryable checks that the calls not in notIdempotent are retried on UNAVAILABLE,
// CreateTemplate on a rate limit, and that WithRetries bounds the attempts.
func TestRetriesRetryable(t *testing.T) {
	f := &fake{fail: []error{rateLimited(t, time.Second)}}
	c, _ := newClient(t, startFake(t, f))
	if _, err := c.Templates().CreateTemplate(context.Background(), &heraldv1.CreateTemplateRequest{}); err != nil {
		t.Errorf("CreateTemplate after a rate limit: %v", err)
	}

	f = &fake{fail: []error{unavailable(), unavailable(), unavailable()}}
	c, s := newClient(t, startFake(t, f), WithRetries(3))
	_, err := c.Templates().GetTemplate(context.Background(), &heraldv1.GetTemplateRequest{Name: "welcome"})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("GetTemplate answered %v, want the third UNAVAILABLE", err)
	}
	if n := len(f.recorded()); n != 3 {
		t.Errorf("%d attempts, want 3", n)
	}
	if w := s.get(); len(w) != 2 {
		t.Errorf("waited %v, want two waits", w)
	}
}

func TestBackoffIsCapped(t *testing.T) {
	r := retrier{jitter: func(limit time.Duration) time.Duration { return limit }}
	var got []time.Duration
	for attempt := 1; attempt <= 8; attempt++ {
		d, ok := r.wait("/herald.v1.NotificationService/Send", unavailable(), attempt)
		if !ok {
			t.Fatalf("attempt %d: not retried", attempt)
		}
		got = append(got, d)
	}
	want := []time.Duration{100, 200, 400, 800, 1600, 3200, 5000, 5000}
	for i := range want {
		want[i] *= time.Millisecond
	}
	if !equalDurations(got, want) {
		t.Errorf("waits %v, want %v", got, want)
	}
}

func TestSendBatchKeys(t *testing.T) {
	f := &fake{fail: []error{unavailable()}}
	c, _ := newClient(t, startFake(t, f))
	rcpt := func(key string) *heraldv1.BatchRecipient {
		return &heraldv1.BatchRecipient{IdempotencyKey: key, Recipient: emailRequest().Recipient}
	}
	req := &heraldv1.SendBatchRequest{Category: "account", Recipients: []*heraldv1.BatchRecipient{rcpt(""), rcpt("mine"), rcpt("")}}
	before := proto.Clone(req)

	res, err := c.SendBatch(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(req, before) {
		t.Errorf("the caller's request became %v", req)
	}
	calls := f.recorded()
	if len(calls) != 2 {
		t.Fatalf("%d attempts, want 2", len(calls))
	}
	keys := func(c call) []string {
		var ks []string
		for _, r := range c.req.(*heraldv1.SendBatchRequest).Recipients {
			ks = append(ks, r.IdempotencyKey)
		}
		return ks
	}
	first, second := keys(calls[0]), keys(calls[1])
	if first[1] != "mine" || first[0] == "" || first[2] == "" || first[0] == first[2] {
		t.Errorf("keys %q, want the caller's kept and two different ones made", first)
	}
	if strings.Join(first, ",") != strings.Join(second, ",") {
		t.Errorf("the retry carried keys %q, the first attempt %q", second, first)
	}
	// The fake saw every key twice; only the caller's own key is reported a duplicate.
	for i, want := range []bool{false, true, false} {
		if got := res.Results[i].Response.Duplicate; got != want {
			t.Errorf("result %d: Duplicate %v, want %v", i, got, want)
		}
	}
}

// TestCallersKey checks that a key the caller gives is sent as it is, and its repeat reported.
func TestCallersKey(t *testing.T) {
	f := &fake{}
	c, _ := newClient(t, startFake(t, f))
	req := emailRequest()
	req.IdempotencyKey = "order-42"
	for i, want := range []bool{false, true} {
		res, err := c.Notifications().Send(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		if res.Duplicate != want {
			t.Errorf("send %d: Duplicate %v, want %v", i+1, res.Duplicate, want)
		}
	}
	for _, call := range f.recorded() {
		if got := call.req.(*heraldv1.SendRequest).IdempotencyKey; got != "order-42" {
			t.Errorf("sent key %q, want the caller's", got)
		}
	}
}

// TestServicesCarryKeysAndRetries checks that a Send through Notifications gets a key as
// Client.Send does, and that the contacts connection retries and authenticates too.
func TestServicesCarryKeysAndRetries(t *testing.T) {
	notifier, contacts := &fake{}, &fake{fail: []error{unavailable()}}
	c, s := newClient(t, startFake(t, notifier), WithContactsAddr(startFake(t, contacts)))
	if _, err := c.Notifications().Send(context.Background(), emailRequest()); err != nil {
		t.Fatal(err)
	}
	if got := notifier.recorded()[0].req.(*heraldv1.SendRequest).IdempotencyKey; got == "" {
		t.Error("a Send through Notifications carried no idempotency key")
	}
	if _, err := c.Contacts().GetUser(context.Background(), &heraldv1.GetUserRequest{UserId: "u1"}); err != nil {
		t.Fatal(err)
	}
	calls := contacts.recorded()
	if len(calls) != 2 || len(s.get()) != 1 {
		t.Errorf("GetUser: %d attempts and waits %v, want 2 attempts and one wait", len(calls), s.get())
	}
	for _, call := range append(calls, notifier.recorded()...) {
		if call.auth != "Bearer "+testKey {
			t.Errorf("%s carried authorization %q, want the bearer key", call.method, call.auth)
		}
	}
}

// TestContactsDefaultAddr checks that Contacts goes to the notifier's address without
// WithContactsAddr.
func TestContactsDefaultAddr(t *testing.T) {
	f := &fake{}
	c, _ := newClient(t, startFake(t, f))
	if _, err := c.Contacts().GetUser(context.Background(), &heraldv1.GetUserRequest{UserId: "u1"}); err != nil {
		t.Fatal(err)
	}
	if calls := f.recorded(); len(calls) != 1 || calls[0].method != heraldv1.ContactsService_GetUser_FullMethodName {
		t.Errorf("the notifier's address received %v, want one GetUser", calls)
	}
}

func TestDeadline(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ctx      func() (context.Context, context.CancelFunc)
		min, max time.Duration
		opts     []Option
	}{{
		name: "10 s when the context has none",
		ctx:  func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) },
		min:  time.Nanosecond, max: 10 * time.Second,
	}, {
		name: "WithTimeout when the context has none",
		ctx:  func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) },
		opts: []Option{WithTimeout(time.Hour)},
		min:  59 * time.Minute, max: time.Hour,
	}, {
		name: "the context's own",
		ctx: func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 2*time.Hour)
		},
		opts: []Option{WithTimeout(time.Hour)},
		min:  119 * time.Minute, max: 2 * time.Hour,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fake{}
			c, _ := newClient(t, startFake(t, f), tc.opts...)
			ctx, cancel := tc.ctx()
			defer cancel()
			if _, err := c.Send(ctx, emailRequest()); err != nil {
				t.Fatal(err)
			}
			if d := f.recorded()[0].deadline; d < tc.min || d > tc.max {
				t.Errorf("the server saw %s left, want between %s and %s", d, tc.min, tc.max)
			}
		})
	}
}

func TestBadKey(t *testing.T) {
	for _, tc := range []struct{ name, key, want string }{
		{"empty", "", "no app key"},
		{"with Bearer", "Bearer " + testKey, `starts with "Bearer "`},
		{"another service's", "sk_live_51HsecretValue", `does not start with "hk_"`},
		{"trailing newline", testKey + "\n", "line break"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewClient("127.0.0.1:7400", tc.key)
			if err == nil {
				c.Close()
				t.Fatal("the key was taken")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to say %q", err, tc.want)
			}
			for _, secret := range []string{"0123456789abcdef", "secretValue"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q holds the key", err)
				}
			}
		})
	}
}

func TestWaitForNotification(t *testing.T) {
	const (
		queued   = heraldv1.DeliveryState_DELIVERY_STATE_QUEUED
		sending  = heraldv1.DeliveryState_DELIVERY_STATE_SENDING
		retrying = heraldv1.DeliveryState_DELIVERY_STATE_RETRYING
		sent     = heraldv1.DeliveryState_DELIVERY_STATE_SENT
		skipped  = heraldv1.DeliveryState_DELIVERY_STATE_SKIPPED
	)
	f := &fake{states: [][]heraldv1.DeliveryState{
		{queued, skipped}, {sending, skipped}, {retrying, skipped}, {retrying, skipped}, {retrying, skipped},
		{retrying, skipped}, {retrying, skipped}, {sent, skipped},
	}}
	c, s := newClient(t, startFake(t, f))
	c.sleep = func(ctx context.Context, d time.Duration) error {
		s.waits = append(s.waits, d)
		return nil
	}
	n, err := c.WaitForNotification(context.Background(), "n1")
	if err != nil {
		t.Fatal(err)
	}
	if got := n.Deliveries[0].State; got != sent {
		t.Errorf("returned with the delivery %s, want SENT", got)
	}
	want := []time.Duration{100, 200, 400, 800, 1600, 2000, 2000}
	for i := range want {
		want[i] *= time.Millisecond
	}
	if !equalDurations(s.waits, want) {
		t.Errorf("polled after %v, want %v", s.waits, want)
	}
}

func TestWaitForNotificationEnds(t *testing.T) {
	f := &fake{states: [][]heraldv1.DeliveryState{{heraldv1.DeliveryState_DELIVERY_STATE_SCHEDULED}}}
	c, _ := newClient(t, startFake(t, f))
	ctx, cancel := context.WithCancel(context.Background())
	c.sleep = func(context.Context, time.Duration) error {
		cancel()
		return context.Canceled
	}
	n, err := c.WaitForNotification(ctx, "n1")
	if status.Code(err) != codes.Canceled {
		t.Errorf("error %v, want CANCELED", err)
	}
	if n.GetNotificationId() != "n1" {
		t.Errorf("returned %v, want the last notification seen", n)
	}
}

// TestMaxMessageSize checks that the client holds itself to the servers' limit, refusing a
// larger request itself, at once and without retrying.
func TestMaxMessageSize(t *testing.T) {
	if maxMessageSize != server.MaxMessageSize {
		t.Fatalf("maxMessageSize is %d, the servers' %d", maxMessageSize, server.MaxMessageSize)
	}
	f := &fake{}
	c, s := newClient(t, startFake(t, f))
	req := emailRequest()
	req.GetContent().Body = strings.Repeat("x", maxMessageSize)
	if _, err := c.Send(context.Background(), req); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a Send over the limit answered %v, want RESOURCE_EXHAUSTED", err)
	}
	if n, w := len(f.recorded()), s.get(); n != 0 || len(w) != 0 {
		t.Errorf("the server received %d attempts and the client waited %v, want none", n, w)
	}
}
