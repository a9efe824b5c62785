package sim_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/services/workers"
	"github.com/heraldhq/herald/services/workers/sim"
)

func start(t *testing.T) (*sim.Server, string) {
	t.Helper()
	s := sim.NewServer()
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, srv.URL
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func email(to string) *workers.Message {
	return &workers.Message{
		DeliveryID:     uuid.Must(uuid.NewV7()),
		NotificationID: uuid.Must(uuid.NewV7()),
		Channel:        delivery.Email,
		To:             to,
		Content:        delivery.Content{Subject: "Welcome", Text: "Hello there", HTML: "<p>Hello there</p>"},
		Attempt:        1,
	}
}

func list(t *testing.T, url, query string) []sim.Message {
	t.Helper()
	res, err := http.Get(url + "/v1/messages" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("list%s: status %d", query, res.StatusCode)
	}
	var body struct{ Messages []sim.Message }
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return body.Messages
}

func TestSendAndList(t *testing.T) {
	s, url := start(t)
	mail := sim.NewSender(url, delivery.Email)
	push := sim.NewSender(url+"/", delivery.IOS)
	if mail.Provider() != "sim" {
		t.Errorf("Provider() = %q", mail.Provider())
	}

	first := email("ada@example.com")
	r1, err := mail.Send(ctx(t), first)
	if err != nil {
		t.Fatal(err)
	}
	second := &workers.Message{
		DeliveryID: uuid.Must(uuid.NewV7()), NotificationID: first.NotificationID, Channel: delivery.IOS,
		To: "device-token-1", Content: delivery.Content{Title: "Hi", Body: "Tap me", Data: map[string]any{"k": "v"}},
	}
	r2, err := push.Send(ctx(t), second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(r1.ProviderMessageID, "sim-") || r1.ProviderMessageID == r2.ProviderMessageID {
		t.Errorf("ids %q, %q", r1.ProviderMessageID, r2.ProviderMessageID)
	}

	all := list(t, url, "")
	if len(all) != 2 || all[0].ID != r2.ProviderMessageID || all[1].ID != r1.ProviderMessageID {
		t.Fatalf("list is not newest first: %+v", all)
	}
	got := all[1]
	if got.DeliveryID != first.DeliveryID.String() || got.NotificationID != first.NotificationID.String() ||
		got.Channel != delivery.Email || got.To != "ada@example.com" || got.Content.Subject != "Welcome" ||
		got.Content.Text != "Hello there" || got.Content.HTML != "<p>Hello there</p>" || got.ReceivedAt.IsZero() {
		t.Errorf("recorded %+v", got)
	}
	if all[0].Content.Data["k"] != "v" {
		t.Errorf("data lost: %+v", all[0].Content)
	}

	if l := list(t, url, "?channel=ios"); len(l) != 1 || l[0].ID != r2.ProviderMessageID {
		t.Errorf("channel filter: %+v", l)
	}
	if l := list(t, url, "?delivery_id="+first.DeliveryID.String()); len(l) != 1 || l[0].ID != r1.ProviderMessageID {
		t.Errorf("delivery filter: %+v", l)
	}
	if l := list(t, url, "?channel=sms"); len(l) != 0 {
		t.Errorf("sms: %+v", l)
	}
	if len(s.Messages("", "")) != 2 {
		t.Error("Messages() disagrees with the API")
	}
}

func TestFailureConventions(t *testing.T) {
	tests := []struct {
		to      string
		outcome workers.Outcome
		reason  string
	}{
		{"fail@example.com", workers.OutcomeFailed, "rejected"},
		{"fail-permanent", workers.OutcomeFailed, "rejected"},
		{"ada+fail@example.com", workers.OutcomeFailed, "rejected"},
		{"Ada+FAIL@example.com", workers.OutcomeFailed, "rejected"},
		{"ada@example.com", workers.OutcomeSent, ""},
	}
	for _, tt := range tests {
		t.Run(tt.to, func(t *testing.T) {
			s, url := start(t)
			m := email(tt.to)
			_, err := sim.NewSender(url, delivery.Email).Send(ctx(t), m)
			o, reason, _ := workers.Classify(err)
			if o != tt.outcome || reason != tt.reason {
				t.Fatalf("Classify = %v, %q; want %v, %q (err: %v)", o, reason, tt.outcome, tt.reason, err)
			}
			if err != nil {
				if strings.Contains(err.Error(), tt.to) || strings.Contains(err.Error(), "Hello there") {
					t.Errorf("error %q contains the address or the body", err)
				}
				if !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "simulated") {
					t.Errorf("error %q lacks the status or the reason", err)
				}
				if len(s.Messages("", "")) != 0 {
					t.Error("a rejected message was recorded")
				}
			}
		})
	}
}

func TestFlakyFailsTwiceThenSucceeds(t *testing.T) {
	s, url := start(t)
	snd := sim.NewSender(url, delivery.Email)
	m := email("ada+flaky@example.com")
	for attempt := 1; attempt <= 2; attempt++ {
		_, err := snd.Send(ctx(t), m)
		var tr *workers.TransientError
		if !errors.As(err, &tr) || !strings.Contains(err.Error(), "503") {
			t.Fatalf("attempt %d: %v, want a transient 503", attempt, err)
		}
		if strings.Contains(err.Error(), m.To) {
			t.Errorf("error %q contains the address", err)
		}
	}
	if _, err := snd.Send(ctx(t), m); err != nil {
		t.Fatalf("attempt 3: %v", err)
	}
	// Another delivery to the same address starts its own count.
	other := email(m.To)
	if _, err := snd.Send(ctx(t), other); err == nil {
		t.Error("a new delivery's first attempt succeeded")
	}
	if got := s.Messages("", m.DeliveryID.String()); len(got) != 1 {
		t.Errorf("recorded %d messages for the flaky delivery, want 1", len(got))
	}
}

func TestBadRequests(t *testing.T) {
	_, url := start(t)
	for name, body := range map[string]string{
		"not json":        `{`,
		"unknown channel": `{"channel": "fax", "to": "x"}`,
		"no to":           `{"channel": "sms", "to": " "}`,
		"unknown field":   `{"channel": "sms", "to": "+15550100", "too": 1}`,
	} {
		t.Run(name, func(t *testing.T) {
			res, err := http.Post(url+"/v1/messages", "application/json", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var e struct{ Error string }
			if err := json.NewDecoder(res.Body).Decode(&e); err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != http.StatusBadRequest || e.Error == "" {
				t.Errorf("status %d error %q", res.StatusCode, e.Error)
			}
		})
	}
	res, err := http.Get(url + "/v1/messages?channel=fax")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadRequest {
		t.Errorf("unknown channel filter: status %d", res.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodDelete, url+"/v1/messages", nil)
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("DELETE: status %d", res.StatusCode)
	}
}

func TestSenderErrors(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		outcome workers.Outcome
		retry   time.Duration
	}{
		{"500", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(500) }, workers.OutcomeRetry, 0},
		{"503 with Retry-After", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Retry-After", "4")
			w.WriteHeader(503)
		}, workers.OutcomeRetry, 4 * time.Second},
		{"429", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(429) }, workers.OutcomeRetry, 0},
		{"404", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(404) }, workers.OutcomeFailed, 0},
		{"redirect", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		}, workers.OutcomeRetry, 0},
		{"2xx without id", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(200) }, workers.OutcomeSent, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			_, err := sim.NewSender(srv.URL, delivery.Email).Send(ctx(t), email("ada@example.com"))
			if o, _, ra := workers.Classify(err); o != tt.outcome || ra != tt.retry {
				t.Errorf("Classify = %v, %v; want %v, %v (err: %v)", o, ra, tt.outcome, tt.retry, err)
			}
		})
	}

	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	_, err := sim.NewSender(url, delivery.Email).Send(ctx(t), email("ada@example.com"))
	var tr *workers.TransientError
	if !errors.As(err, &tr) {
		t.Errorf("server down: %v, want a transient error", err)
	}

	_, url = start(t)
	_, err = sim.NewSender(url, delivery.SMS).Send(ctx(t), email("ada@example.com"))
	if o, reason, _ := workers.Classify(err); o != workers.OutcomeFailed || reason != "wrong_channel" {
		t.Errorf("email through an SMS sender: %v", err)
	}
}

func TestKeepsTheLastCapacityMessages(t *testing.T) {
	s, url := start(t)
	snd := sim.NewSender(url, delivery.SMS)
	var ids []string
	for i := range sim.Capacity + 5 {
		m := &workers.Message{DeliveryID: uuid.Must(uuid.NewV7()), To: fmt.Sprintf("+1555%07d", i),
			Channel: delivery.SMS, Content: delivery.Content{Body: "code"}}
		if _, err := snd.Send(ctx(t), m); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.DeliveryID.String())
	}
	got := s.Messages("", "")
	if len(got) != sim.Capacity {
		t.Fatalf("kept %d, want %d", len(got), sim.Capacity)
	}
	if got[0].DeliveryID != ids[len(ids)-1] || got[len(got)-1].DeliveryID != ids[5] {
		t.Errorf("kept the wrong ones: newest %s, oldest %s", got[0].DeliveryID, got[len(got)-1].DeliveryID)
	}
}

func TestPageEscapesHostileContent(t *testing.T) {
	_, url := start(t)
	hostile := &workers.Message{
		DeliveryID: uuid.Must(uuid.NewV7()),
		Channel:    delivery.Email,
		To:         `"><script>alert("to")</script>@example.com`,
		Content: delivery.Content{
			Subject: `<img src=x onerror=alert(1)>`,
			Text:    "line one\n</pre><script>alert('body')</script>",
		},
	}
	if _, err := sim.NewSender(url, delivery.Email).Send(ctx(t), hostile); err != nil {
		t.Fatal(err)
	}
	htmlOnly := email("grace@example.com")
	htmlOnly.Content = delivery.Content{Subject: "HTML", HTML: `<a href="javascript:alert(2)">x</a>`}
	if _, err := sim.NewSender(url, delivery.Email).Send(ctx(t), htmlOnly); err != nil {
		t.Fatal(err)
	}

	res, err := http.Get(url + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	page := string(raw)
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("status %d, Content-Type %q", res.StatusCode, res.Header.Get("Content-Type"))
	}
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("CSP %q", csp)
	}
	for _, raw := range []string{"<script", "<img", `<a href="javascript`, "onerror=alert(1)>"} {
		if strings.Contains(page, raw) {
			t.Errorf("page contains %q unescaped", raw)
		}
	}
	for _, escaped := range []string{"&lt;script&gt;", "&lt;img src=x onerror=alert(1)&gt;", "line one\n", "grace@example.com", "HTML only"} {
		if !strings.Contains(page, escaped) {
			t.Errorf("page lacks %q", escaped)
		}
	}

	res, err = http.Get(url + "/?channel=sms")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if strings.Contains(string(raw), "grace@example.com") || !strings.Contains(string(raw), "No messages") {
		t.Error("page ignores the channel filter")
	}
	res, err = http.Get(url + "/nothing-here")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Errorf("/nothing-here: status %d", res.StatusCode)
	}
}

func TestConcurrentSends(t *testing.T) {
	s, url := start(t)
	snd := sim.NewSender(url, delivery.Email)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			to := fmt.Sprintf("user%d@example.com", i)
			if i%5 == 0 {
				to = fmt.Sprintf("user%d+flaky@example.com", i)
			}
			m := email(to)
			for attempt := 1; ; attempt++ {
				_, err := snd.Send(context.Background(), m)
				if err == nil {
					return
				}
				if o, _, _ := workers.Classify(err); o != workers.OutcomeRetry || attempt > 3 {
					t.Errorf("%v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := len(s.Messages(delivery.Email, "")); n != 50 {
		t.Errorf("recorded %d, want 50", n)
	}
}

// TestHealth: the simulator answers the probes a Deployment of it runs (/healthz, /readyz).
func TestHealth(t *testing.T) {
	_, url := start(t)
	for _, path := range []string{"/healthz", "/readyz"} {
		res, err := http.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || string(body) != "ok\n" {
			t.Errorf("GET %s = %d %q, want 200 ok", path, res.StatusCode, body)
		}
	}
}
