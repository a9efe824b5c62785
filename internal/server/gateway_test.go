package server

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/utilities"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/heraldhq/herald/internal/tlsconfig"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/proto/openapi"
)

// fakeNotifications answers GetNotification with err (or an empty notification), and keeps the
// metadata of the last call.
type fakeNotifications struct {
	heraldv1.UnimplementedNotificationServiceServer
	err error
	md  chan metadata.MD
}

// keep keeps the call's metadata, unless the last call's was not read: the test that made that
// call fails on its own, and this one must not hang.
func (f *fakeNotifications) keep(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	select {
	case f.md <- md:
	default:
	}
}

func (f *fakeNotifications) GetNotification(ctx context.Context, req *heraldv1.GetNotificationRequest) (*heraldv1.GetNotificationResponse, error) {
	f.keep(ctx)
	if f.err != nil {
		return nil, f.err
	}
	return &heraldv1.GetNotificationResponse{Notification: &heraldv1.Notification{NotificationId: req.GetNotificationId()}}, nil
}

func (f *fakeNotifications) Send(ctx context.Context, req *heraldv1.SendRequest) (*heraldv1.SendResponse, error) {
	f.keep(ctx)
	return &heraldv1.SendResponse{NotificationId: "n1", Duplicate: true}, nil
}

// startGateway serves fake over gRPC and HTTP/JSON, and returns the HTTP base URL.
func startGateway(t *testing.T, fake *fakeNotifications) string {
	t.Helper()
	s, err := New(slog.New(slog.DiscardHandler), "127.0.0.1:0", "127.0.0.1:0", tlsconfig.Files{})
	if err != nil {
		t.Fatal(err)
	}
	heraldv1.RegisterNotificationServiceServer(s, fake)
	local, err := s.Local()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ServeJSON(local, heraldv1.RegisterNotificationServiceHandler); err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Close(context.Background()) })
	return "http://" + s.HTTPAddr()
}

type answer struct {
	status int
	header http.Header
	body   map[string]any
}

func call(t *testing.T, method, url, body string, header map[string]string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	a := answer{status: res.StatusCode, header: res.Header}
	if err := json.Unmarshal(raw, &a.body); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %v: %q", method, url, err, raw)
	}
	return a
}

func TestGatewayErrors(t *testing.T) {
	retry := status.New(codes.ResourceExhausted, "slow down")
	retry, _ = retry.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(1500 * time.Millisecond)})
	for _, c := range []struct {
		name       string
		err        error
		httpStatus int
		code       codes.Code
		header     string // a header the answer must have, "name: value"
	}{
		{"ok", nil, 200, codes.OK, ""},
		{"invalid", status.Error(codes.InvalidArgument, "bad"), 400, codes.InvalidArgument, ""},
		{"unauthenticated", status.Error(codes.Unauthenticated, "no key"), 401, codes.Unauthenticated, "Www-Authenticate: Bearer"},
		{"permission", status.Error(codes.PermissionDenied, "no"), 403, codes.PermissionDenied, ""},
		{"not found", status.Error(codes.NotFound, "none"), 404, codes.NotFound, ""},
		{"already exists", status.Error(codes.AlreadyExists, "key reused"), 409, codes.AlreadyExists, ""},
		{"aborted", status.Error(codes.Aborted, "stale etag"), 409, codes.Aborted, ""},
		{"rate limited", retry.Err(), 429, codes.ResourceExhausted, "Retry-After: 2"},
		{"unavailable", status.Error(codes.Unavailable, "later"), 503, codes.Unavailable, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			fake := &fakeNotifications{err: c.err, md: make(chan metadata.MD, 1)}
			a := call(t, "GET", startGateway(t, fake)+"/v1/notifications/n1", "", nil)
			if a.status != c.httpStatus {
				t.Errorf("HTTP status %d, want %d (%v)", a.status, c.httpStatus, a.body)
			}
			if c.code == codes.OK {
				if a.body["notification"].(map[string]any)["notificationId"] != "n1" {
					t.Errorf("answer %v, want notification n1", a.body)
				}
				return
			}
			if got := codes.Code(a.body["code"].(float64)); got != c.code || a.body["message"] != status.Convert(c.err).Message() {
				t.Errorf("body %v, want a google.rpc.Status with code %v and the message", a.body, c.code)
			}
			if c.header != "" {
				name, value, _ := strings.Cut(c.header, ": ")
				if got := a.header.Get(name); got != value {
					t.Errorf("%s: %q, want %q", name, got, value)
				}
			}
			if c.code == codes.ResourceExhausted && len(a.body["details"].([]any)) != 1 {
				t.Errorf("details %v, want the RetryInfo", a.body["details"])
			}
		})
	}
}

func TestGatewayRequests(t *testing.T) {
	fake := &fakeNotifications{md: make(chan metadata.MD, 1)}
	url := startGateway(t, fake)

	t.Run("metadata", func(t *testing.T) {
		a := call(t, "POST", url+"/v1/notifications:send", `{"category":"a"}`, map[string]string{
			"Authorization": "Bearer hk_x", "Idempotency-Key": "k1", "Traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
			"X-Other": "not passed on", "Grpc-Metadata-Herald-App": "forged",
		})
		if a.status != 200 || a.body["duplicate"] != true {
			t.Fatalf("answer %d %v", a.status, a.body)
		}
		md := <-fake.md
		for key, want := range map[string]string{"authorization": "Bearer hk_x", IdempotencyKeyMetadata: "k1"} {
			if got := md.Get(key); len(got) != 1 || got[0] != want {
				t.Errorf("metadata %s = %q, want %q", key, got, want)
			}
		}
		for _, key := range []string{"x-other", "herald-app", "grpc-metadata-herald-app", "traceparent"} {
			if got := md.Get(key); len(got) != 0 {
				t.Errorf("metadata %s = %q: a header the services do not read was passed on", key, got)
			}
		}
	})
	t.Run("unknown field", func(t *testing.T) {
		a := call(t, "POST", url+"/v1/notifications:send", `{"category":"a","categroy":"b"}`, nil)
		if a.status != 400 || !strings.Contains(a.body["message"].(string), `unknown field "categroy"`) {
			t.Errorf("answer %d %v, want 400 naming the unknown field", a.status, a.body)
		}
	})
	t.Run("body at the limit", func(t *testing.T) {
		body := `{"category":"a"}` + strings.Repeat(" ", MaxMessageSize-len(`{"category":"a"}`))
		if a := call(t, "POST", url+"/v1/notifications:send", body, nil); a.status != 200 {
			t.Errorf("answer %d %v, want 200", a.status, a.body)
		}
		<-fake.md
	})
	t.Run("body over the limit", func(t *testing.T) {
		body := strings.Repeat(" ", MaxMessageSize+1)
		a := call(t, "POST", url+"/v1/notifications:send", body, nil)
		if a.status != http.StatusRequestEntityTooLarge || codes.Code(a.body["code"].(float64)) != codes.ResourceExhausted {
			t.Errorf("answer %d %v, want 413 RESOURCE_EXHAUSTED", a.status, a.body)
		}
		// Without a Content-Length, the body is counted as it is read.
		req, _ := http.NewRequest("POST", url+"/v1/notifications:send", io.MultiReader(strings.NewReader(body)))
		req.ContentLength = -1
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("chunked body: status %d, want 413", res.StatusCode)
		}
	})
	t.Run("encoded slash", func(t *testing.T) {
		for _, path := range []string{"/v1/notifications/a%2Fb", "/v1/notifications/a%2fb"} {
			if a := call(t, "GET", url+path, "", nil); a.status != 400 || !strings.Contains(a.body["message"].(string), "cannot hold '/'") {
				t.Errorf("GET %s: answer %d %v, want 400", path, a.status, a.body)
			}
		}
	})
	t.Run("unbound route", func(t *testing.T) {
		if a := call(t, "GET", url+"/v1/nothing", "", nil); a.status != 404 {
			t.Errorf("answer %d %v, want 404", a.status, a.body)
		}
	})
	t.Run("metrics", func(t *testing.T) {
		res, err := http.Get(url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		raw, _ := io.ReadAll(res.Body)
		for _, want := range []string{`herald_http_api_requests_total{code="200",method="post"}`, `herald_http_api_requests_total{code="413",method="post"} 2`} {
			if !strings.Contains(string(raw), want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	})
	t.Run("openapi", func(t *testing.T) {
		res, err := http.Get(url + "/openapi.json")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		raw, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/json" || string(raw) != string(openapi.Document) {
			t.Errorf("GET /openapi.json: %d %q, want the document", res.StatusCode, res.Header.Get("Content-Type"))
		}
	})
}

// TestGatewayClose closes a server while it serves the JSON API: the in-memory connection is
// closed with it.
func TestGatewayClose(t *testing.T) {
	s, err := New(slog.New(slog.DiscardHandler), "", "127.0.0.1:0", tlsconfig.Files{})
	if err != nil {
		t.Fatal(err)
	}
	local, err := s.Local()
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	s.Close(context.Background())
	if _, err := heraldv1.NewNotificationServiceClient(local).GetNotification(context.Background(), &heraldv1.GetNotificationRequest{},
		grpc.WaitForReady(false)); status.Code(err) != codes.Canceled && status.Code(err) != codes.Unavailable {
		t.Errorf("call after Close: %v, want the connection closed", err)
	}
}

// TestStrictQuery: a query parameter must name a field of the request, by its proto or JSON
// name, through nested messages. (grpc-gateway parses the query only for requests with fields
// the path and body leave unbound: elsewhere there is nothing a parameter could set.)
func TestStrictQuery(t *testing.T) {
	for _, c := range []struct {
		query string
		ok    bool
	}{
		{"version=2", true},
		{"name=a&version=2", true},
		{"versoin=2", false},
		{"version.value=2", false},
		{"", true},
	} {
		values, err := url.ParseQuery(c.query)
		if err != nil {
			t.Fatal(err)
		}
		var req heraldv1.GetTemplateRequest
		err = strictQuery{}.Parse(&req, values, utilities.NewDoubleArray(nil))
		if (err == nil) != c.ok {
			t.Errorf("%q: %v, want ok=%v", c.query, err, c.ok)
		}
		if !c.ok && status.Code(err) != codes.InvalidArgument {
			t.Errorf("%q: %v, want INVALID_ARGUMENT", c.query, err)
		}
	}
	var req heraldv1.ExplainRequest
	if err := (strictQuery{}).Parse(&req, url.Values{"request.recipient.userId": {"u1"}}, utilities.NewDoubleArray(nil)); err != nil ||
		req.GetRequest().GetRecipient().GetUserId() != "u1" {
		t.Errorf("nested JSON name: %v, %v", err, &req)
	}
}
