package sendgridfake_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sendgrid/sendgrid-go"
	"github.com/sendgrid/sendgrid-go/helpers/mail"

	"github.com/heraldhq/herald/internal/fakes/sendgridfake"
)

const key = "SG.test-key"

func start(t *testing.T) (*sendgridfake.Fake, string) {
	t.Helper()
	f := sendgridfake.New(key)
	url := f.Start()
	t.Cleanup(f.Close)
	return f, url
}

const validBody = `{
	"personalizations": [{"to": [{"email": "ada@example.com", "name": "Ada"}], "custom_args": {"delivery_id": "d1"}}],
	"from": {"email": "noreply@herald.test", "name": "Herald"},
	"subject": "Hello",
	"content": [{"type": "text/plain", "value": "hi"}, {"type": "text/html", "value": "<p>hi</p>"}],
	"custom_args": {"notification_id": "n1"}
}`

// post sends body to the fake's send endpoint with the given headers (nil means the right key
// and JSON) and returns the status, headers and decoded SendGrid errors.
func post(t *testing.T, url, body string, hdr map[string]string) (int, http.Header, []apiErr) {
	t.Helper()
	st, h, errs, err := do(url, body, hdr)
	if err != nil {
		t.Fatal(err)
	}
	return st, h, errs
}

// do is post for goroutines other than the test's.
func do(url, body string, hdr map[string]string) (int, http.Header, []apiErr, error) {
	req, err := http.NewRequest(http.MethodPost, url+sendgridfake.SendPath, strings.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	if hdr == nil {
		hdr = map[string]string{"Authorization": "Bearer " + key, "Content-Type": "application/json"}
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, nil, nil, err
	}
	var eb struct{ Errors []apiErr }
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &eb); err != nil {
			return 0, nil, nil, fmt.Errorf("answer %d is not SendGrid JSON: %q", res.StatusCode, raw)
		}
	}
	return res.StatusCode, res.Header, eb.Errors, nil
}

type apiErr struct {
	Message string
	Field   *string
	Help    *string
}

func TestAcceptsTheSDKsMail(t *testing.T) {
	f, url := start(t)
	m := mail.NewSingleEmail(mail.NewEmail("Herald", "noreply@herald.test"), "Your code",
		mail.NewEmail("", "ada@example.com"), "code 1234", "<b>code 1234</b>")
	m.SetCustomArg("delivery_id", "d-42")
	m.AddCategories("security")

	c := sendgrid.NewSendClient(key)
	c.BaseURL = url + sendgridfake.SendPath
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := c.SendWithContext(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d, body %s", res.StatusCode, res.Body)
	}
	id := http.Header(res.Headers).Get("X-Message-Id")
	if id == "" {
		t.Fatal("no X-Message-Id")
	}

	msgs := f.Messages()
	if len(msgs) != 1 {
		t.Fatalf("recorded %d messages, want 1", len(msgs))
	}
	got := msgs[0]
	if got.MessageID != id || len(got.To) != 1 || got.To[0] != "ada@example.com" ||
		got.From != "noreply@herald.test" || got.FromName != "Herald" || got.Subject != "Your code" ||
		got.Text != "code 1234" || got.HTML != "<b>code 1234</b>" ||
		got.CustomArgs["delivery_id"] != "d-42" || len(got.Categories) != 1 {
		t.Errorf("recorded %+v", got)
	}
	if n := f.Count("d-42"); n != 1 {
		t.Errorf("Count = %d, want 1", n)
	}
}

func TestMergesCustomArgsAndRecordsEachPersonalization(t *testing.T) {
	f, url := start(t)
	body := `{"personalizations": [
			{"to": [{"email": "a@example.com"}], "custom_args": {"delivery_id": "d1"}, "subject": "for a"},
			{"to": [{"email": "b@example.com"}, {"email": "c@example.com"}], "custom_args": {"delivery_id": "d2"}}],
		"from": {"email": "noreply@herald.test"}, "subject": "default",
		"content": [{"type": "text/html", "value": "<p>x</p>"}],
		"custom_args": {"notification_id": "n1", "delivery_id": "overridden"}}`
	if st, _, errs := post(t, url, body, nil); st != http.StatusAccepted {
		t.Fatalf("status %d %+v", st, errs)
	}
	msgs := f.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d messages", len(msgs))
	}
	if msgs[0].Subject != "for a" || msgs[1].Subject != "default" || len(msgs[1].To) != 2 {
		t.Errorf("subjects/to wrong: %+v", msgs)
	}
	if msgs[0].CustomArgs["notification_id"] != "n1" || msgs[1].CustomArgs["delivery_id"] != "d2" {
		t.Errorf("custom args not merged: %+v", msgs)
	}
	if f.Count("d1") != 1 || f.Count("d2") != 1 || f.Count("overridden") != 0 {
		t.Errorf("counts d1=%d d2=%d", f.Count("d1"), f.Count("d2"))
	}
}

func TestAuthorization(t *testing.T) {
	f, url := start(t)
	for name, auth := range map[string]string{
		"missing":      "",
		"wrong key":    "Bearer SG.other",
		"empty bearer": "Bearer ",
		"basic":        "Basic " + key,
		"no scheme":    key,
	} {
		t.Run(name, func(t *testing.T) {
			hdr := map[string]string{"Content-Type": "application/json"}
			if auth != "" {
				hdr["Authorization"] = auth
			}
			st, _, errs := post(t, url, validBody, hdr)
			if st != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401", st)
			}
			if len(errs) != 1 || errs[0].Message == "" || errs[0].Field != nil || errs[0].Help != nil {
				t.Errorf("errors %+v, want one message with null field and help", errs)
			}
		})
	}
	if len(f.Messages()) != 0 {
		t.Error("an unauthorized message was recorded")
	}
}

func TestErrorBodyHasNullFieldAndHelp(t *testing.T) {
	_, url := start(t)
	req, _ := http.NewRequest(http.MethodPost, url+sendgridfake.SendPath, strings.NewReader(validBody))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if !bytes.Contains(raw, []byte(`"field":null`)) || !bytes.Contains(raw, []byte(`"help":null`)) {
		t.Errorf("body %s", raw)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
}

func TestRejectsInvalidMail(t *testing.T) {
	_, url := start(t)
	const from = `"from": {"email": "noreply@herald.test"}`
	const to = `"personalizations": [{"to": [{"email": "a@example.com"}]}]`
	const content = `"content": [{"type": "text/plain", "value": "x"}]`
	tests := []struct {
		name, body, field string
	}{
		{"not json", `{`, ""},
		{"no personalizations", `{` + from + `, "subject": "s", ` + content + `}`, "personalizations"},
		{"empty personalizations", `{"personalizations": [], ` + from + `, "subject": "s", ` + content + `}`, "personalizations"},
		{"no to", `{"personalizations": [{}], ` + from + `, "subject": "s", ` + content + `}`, "personalizations.0.to"},
		{"to without email", `{"personalizations": [{"to": [{"name": "x"}]}], ` + from + `, "subject": "s", ` + content + `}`, "personalizations.0.to.0.email"},
		{"bad to", `{"personalizations": [{"to": [{"email": "not an address"}]}], ` + from + `, "subject": "s", ` + content + `}`, "personalizations.0.to.0.email"},
		{"no from", `{` + to + `, "subject": "s", ` + content + `}`, "from.email"},
		{"bad from", `{` + to + `, "from": {"email": "Herald <x@y.z>"}, "subject": "s", ` + content + `}`, "from.email"},
		{"no subject", `{` + to + `, ` + from + `, ` + content + `}`, "subject"},
		{"no content", `{` + to + `, ` + from + `, "subject": "s"}`, "content"},
		{"empty value", `{` + to + `, ` + from + `, "subject": "s", "content": [{"type": "text/plain", "value": ""}]}`, "content.0.value"},
		{"no type", `{` + to + `, ` + from + `, "subject": "s", "content": [{"value": "x"}]}`, "content.0.type"},
		{"html before text", `{` + to + `, ` + from + `, "subject": "s", "content": [{"type": "text/html", "value": "x"}, {"type": "text/plain", "value": "x"}]}`, "content"},
		{"misspelt field", `{` + to + `, ` + from + `, "subject": "s", ` + content + `, "customargs": {}}`, "customargs"},
		{"custom_args not strings", `{` + to + `, ` + from + `, "subject": "s", ` + content + `, "custom_args": {"n": 1}}`, "custom_args"},
		{"trailing data", `{` + to + `, ` + from + `, "subject": "s", ` + content + `} {}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, _, errs := post(t, url, tt.body, nil)
			if st != http.StatusBadRequest {
				t.Fatalf("status %d, want 400", st)
			}
			if len(errs) == 0 {
				t.Fatal("no errors in body")
			}
			if tt.field == "" {
				return
			}
			for _, e := range errs {
				if e.Field != nil && *e.Field == tt.field {
					return
				}
			}
			t.Errorf("errors %+v do not name %q", errs, tt.field)
		})
	}
}

func TestSubjectInEveryPersonalizationIsEnough(t *testing.T) {
	_, url := start(t)
	body := `{"personalizations": [{"to": [{"email": "a@example.com"}], "subject": "s"}],
		"from": {"email": "noreply@herald.test"}, "content": [{"type": "text/plain", "value": "x"}]}`
	if st, _, errs := post(t, url, body, nil); st != http.StatusAccepted {
		t.Fatalf("status %d %+v", st, errs)
	}
}

func TestContentTypeAndMethod(t *testing.T) {
	_, url := start(t)
	st, _, _ := post(t, url, validBody, map[string]string{"Authorization": "Bearer " + key, "Content-Type": "text/plain"})
	if st != http.StatusUnsupportedMediaType {
		t.Errorf("text/plain body: status %d, want 415", st)
	}
	st, _, _ = post(t, url, validBody, map[string]string{"Authorization": "Bearer " + key, "Content-Type": "application/json; charset=utf-8"})
	if st != http.StatusAccepted {
		t.Errorf("json with charset: status %d, want 202", st)
	}
	res, err := http.Get(url + sendgridfake.SendPath)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: status %d, want 405", res.StatusCode)
	}
}

func TestGzipBody(t *testing.T) {
	f, url := start(t)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte(validBody))
	zw.Close()
	st, _, errs := post(t, url, buf.String(), map[string]string{
		"Authorization": "Bearer " + key, "Content-Type": "application/json", "Content-Encoding": "gzip"})
	if st != http.StatusAccepted {
		t.Fatalf("status %d %+v", st, errs)
	}
	if f.Count("d1") != 1 {
		t.Error("gzip message not recorded")
	}
}

func TestFail(t *testing.T) {
	f, url := start(t)
	f.Fail(http.StatusServiceUnavailable, 2)
	for i, want := range []int{503, 503, 202} {
		if st, _, _ := post(t, url, validBody, nil); st != want {
			t.Errorf("request %d: status %d, want %d", i, st, want)
		}
	}
	if f.Count("d1") != 1 || f.Requests() != 3 {
		t.Errorf("count %d requests %d, want 1 and 3", f.Count("d1"), f.Requests())
	}

	f.Fail(http.StatusInternalServerError, sendgridfake.Always)
	for i := range 3 {
		if st, _, errs := post(t, url, validBody, nil); st != 500 || len(errs) != 1 {
			t.Errorf("always, request %d: status %d errors %+v", i, st, errs)
		}
	}
	f.Fail(0, 0)
	if st, _, _ := post(t, url, validBody, nil); st != http.StatusAccepted {
		t.Errorf("after Fail(0, 0): status %d", st)
	}
}

func TestRateLimitHeaders(t *testing.T) {
	f, url := start(t)
	f.SetRetryAfter(2500 * time.Millisecond)
	f.Fail(http.StatusTooManyRequests, 1)
	st, h, errs := post(t, url, validBody, nil)
	if st != http.StatusTooManyRequests || len(errs) != 1 {
		t.Fatalf("status %d errors %+v", st, errs)
	}
	if ra := h.Get("Retry-After"); ra != "3" {
		t.Errorf("Retry-After %q, want 3 (rounded up)", ra)
	}
	if h.Get("X-RateLimit-Remaining") != "0" || h.Get("X-RateLimit-Reset") == "" {
		t.Errorf("rate limit headers missing: %v", h)
	}
}

func TestDrop(t *testing.T) {
	f, url := start(t)
	f.Drop(1)
	req, _ := http.NewRequest(http.MethodPost, url+sendgridfake.SendPath, strings.NewReader(validBody))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	if res, err := http.DefaultClient.Do(req); err == nil {
		res.Body.Close()
		t.Fatalf("dropped request answered %d", res.StatusCode)
	}
	if st, _, _ := post(t, url, validBody, nil); st != http.StatusAccepted {
		t.Errorf("after the drop: status %d", st)
	}
	if f.Count("d1") != 1 || f.Requests() != 2 {
		t.Errorf("count %d requests %d, want 1 and 2", f.Count("d1"), f.Requests())
	}
}

func TestDelay(t *testing.T) {
	f, url := start(t)
	f.SetDelay(time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+sendgridfake.SendPath, strings.NewReader(validBody))
	start := time.Now()
	if res, err := http.DefaultClient.Do(req); err == nil {
		res.Body.Close()
		t.Fatal("delayed request answered")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
	f.SetDelay(0)
	if st, _, _ := post(t, url, validBody, nil); st != http.StatusAccepted {
		t.Errorf("after SetDelay(0): status %d", st)
	}
	// Close must not wait for the abandoned delayed handler.
}

func TestHandlerCanBeMounted(t *testing.T) {
	f := sendgridfake.New(key)
	srv := httptest.NewServer(f.Handler())
	defer srv.Close()
	if st, _, _ := post(t, srv.URL, validBody, nil); st != http.StatusAccepted {
		t.Fatalf("status %d", st)
	}
	if f.Count("d1") != 1 {
		t.Error("not recorded")
	}
}

func TestReset(t *testing.T) {
	f, url := start(t)
	post(t, url, validBody, nil)
	f.Fail(500, sendgridfake.Always)
	f.Reset()
	if len(f.Messages()) != 0 || f.Count("d1") != 0 || f.Requests() != 0 {
		t.Fatal("Reset kept records")
	}
	if st, _, _ := post(t, url, validBody, nil); st != http.StatusAccepted {
		t.Errorf("after Reset: status %d", st)
	}
}

func TestConcurrentSends(t *testing.T) {
	f, url := start(t)
	f.Fail(http.StatusServiceUnavailable, 10)
	const n = 50
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			body := strings.Replace(validBody, `"d1"`, fmt.Sprintf(`"d%d"`, i), 1)
			for {
				st, _, _, err := do(url, body, nil)
				if err != nil {
					t.Error(err)
					return
				}
				if st == http.StatusAccepted {
					return
				}
				if st != http.StatusServiceUnavailable {
					t.Errorf("status %d", st)
					return
				}
			}
		})
	}
	wg.Wait()
	for i := range n {
		if c := f.Count(fmt.Sprintf("d%d", i)); c != 1 {
			t.Errorf("d%d received %d times", i, c)
		}
	}
	if r := f.Requests(); r != n+10 {
		t.Errorf("requests %d, want %d", r, n+10)
	}
}

func TestCountOnly(t *testing.T) {
	f, url := start(t)
	if st, _, _ := post(t, url, validBody, nil); st != http.StatusAccepted {
		t.Fatalf("status %d before CountOnly", st)
	}
	var mu sync.Mutex
	var got []string
	f.CountOnly(func(id string, at time.Time) {
		mu.Lock()
		defer mu.Unlock()
		if at.IsZero() {
			t.Error("zero receive time")
		}
		got = append(got, id)
	})
	two := `{
	"personalizations": [{"to": [{"email": "ada@example.com"}], "custom_args": {"delivery_id": "d2"}},
		{"to": [{"email": "bob@example.com"}]}],
	"from": {"email": "noreply@herald.test"}, "subject": "Hello",
	"content": [{"type": "text/plain", "value": "hi"}],
	"custom_args": {"delivery_id": "d3"}
}`
	if st, _, _ := post(t, url, two, nil); st != http.StatusAccepted {
		t.Fatalf("status %d in CountOnly", st)
	}
	if st, _, _ := post(t, url, `{}`, nil); st != http.StatusBadRequest {
		t.Fatalf("invalid mail: status %d, want 400 in CountOnly too", st)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(got, ",") != "d2,d3" {
		t.Errorf("onAccept saw %q, want d2,d3 (the personalization's id, else the request's)", got)
	}
	if n := len(f.Messages()); n != 1 {
		t.Errorf("%d messages kept, want only the one from before CountOnly", n)
	}
	if f.Count("d2") != 0 || f.Count("d1") != 1 {
		t.Errorf("Count(d2) = %d, Count(d1) = %d; want 0 and 1", f.Count("d2"), f.Count("d1"))
	}
	if f.Accepted() != 3 || f.Requests() != 3 {
		t.Errorf("Accepted %d, Requests %d; want 3 and 3", f.Accepted(), f.Requests())
	}
}

func TestRefuseAddress(t *testing.T) {
	f, url := start(t)
	f.RefuseAddress("ADA@example.com")
	st, _, errs := post(t, url, validBody, nil)
	if st != http.StatusBadRequest || len(errs) != 1 || errs[0].Field == nil ||
		*errs[0].Field != "personalizations.0.to.0.email" {
		t.Errorf("refused address: status %d, errors %+v; want 400 naming the recipient", st, errs)
	}
	if n := len(f.Messages()); n != 0 {
		t.Errorf("recorded %d messages, want none", n)
	}
	f.Reset()
	if st, _, _ := post(t, url, validBody, nil); st != http.StatusAccepted {
		t.Errorf("after Reset: status %d, want 202", st)
	}
}
