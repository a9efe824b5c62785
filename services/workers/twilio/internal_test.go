package twilio

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald/services/workers"
)

// nonLoopback records every dial the Senders attempted to an address that is not loopback.
var nonLoopback struct {
	sync.Mutex
	addrs []string
}

// TestMain makes the Senders refuse, and the run fail on, any connection that is not to
// loopback: tests talk to fakes only.
func TestMain(m *testing.M) {
	dialControl = func(_, address string, _ syscall.RawConn) error {
		host, _, err := net.SplitHostPort(address)
		if ip := net.ParseIP(host); err == nil && ip != nil && ip.IsLoopback() {
			return nil
		}
		nonLoopback.Lock()
		nonLoopback.addrs = append(nonLoopback.addrs, address)
		nonLoopback.Unlock()
		return fmt.Errorf("test dialed %s, not loopback", address)
	}
	code := m.Run()
	if len(nonLoopback.addrs) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: tests dialed non-loopback addresses: %v\n", nonLoopback.addrs)
		code = 1
	}
	os.Exit(code)
}

func TestRegionAndEdgeComeFromConfigOnly(t *testing.T) {
	t.Setenv("TWILIO_REGION", "au1")
	t.Setenv("TWILIO_EDGE", "sydney")
	for _, tt := range []struct{ region, edge, want string }{
		{"", "", "https://api.twilio.com/x"},
		{"ie1", "dublin", "https://api.dublin.ie1.twilio.com/x"},
		{"", "dublin", "https://api.dublin.us1.twilio.com/x"},
	} {
		s := &Sender{region: tt.region, edge: tt.edge, user: "a", secret: "b"}
		got, err := s.restClient(http.DefaultTransport).BuildUrl("https://api.twilio.com/x")
		if err != nil || got != tt.want {
			t.Errorf("region %q edge %q: %q %v, want %q", tt.region, tt.edge, got, err, tt.want)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		v    string
		want time.Duration
	}{
		{"", 0},
		{"7", 7 * time.Second},
		{" 7 ", 7 * time.Second},
		{"-3", 0},
		{"soon", 0},
		{"99999999999999", maxRetryAfter},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{now.Add(1000 * time.Hour).Format(http.TimeFormat), maxRetryAfter},
	}
	for _, tt := range tests {
		if got := retryAfter(tt.v, now); got != tt.want {
			t.Errorf("retryAfter(%q) = %v, want %v", tt.v, got, tt.want)
		}
	}
}

func TestRedact(t *testing.T) {
	m := &workers.Message{To: "+14155550123"}
	m.Content.Body = "your code is 123456"
	tests := []struct{ in, want string }{
		{"The 'To' number +14155550123 is not a valid phone number.", "The 'To' number [number] is not a valid phone number."},
		{"The 'To' phone number: +1 (415) 555-0124, is not currently reachable using the 'From' phone number: +15005550006 via SMS.",
			"The 'To' phone number: [number], is not currently reachable using the 'From' phone number: [number] via SMS."},
		{"Body 'your code is 123456' refused", "Body '[body]' refused"},
		{"Attempt to send to unsubscribed recipient", "Attempt to send to unsubscribed recipient"},
		{"error 21617 at 1600 characters", "error 21617 at 1600 characters"},
	}
	for _, tt := range tests {
		if got := redact(tt.in, m); got != tt.want {
			t.Errorf("redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if got := redact(strings.Repeat("é", 300), m); len(got) > maxMessageLen+3 || !strings.HasSuffix(got, "...") {
		t.Errorf("long message not cut: %d bytes", len(got))
	}
}

// FuzzRedact checks that no message Twilio could send gets the recipient's number or the body
// through.
func FuzzRedact(f *testing.F) {
	f.Add("The 'To' number +14155550123 is not a valid phone number.", "+14155550123", "hello there")
	f.Add("'To' number 14155550123 is not a valid mobile number", "+14155550123", "hi")
	f.Add("x+1+14155550123555", "+1415555", "code 0000")
	f.Fuzz(func(t *testing.T, msg, to, body string) {
		if len(to) < 8 || !strings.HasPrefix(to, "+") || strings.Trim(to[1:], "0123456789") != "" {
			t.Skip()
		}
		m := &workers.Message{To: to}
		m.Content.Body = body
		got := redact(msg, m)
		if strings.Contains(got, to) || strings.Contains(got, to[1:]) {
			t.Errorf("redact(%q) = %q keeps the number", msg, got)
		}
		if len(body) >= 8 && strings.Contains(msg, body) && strings.Contains(got, body) && !strings.ContainsAny(body, "[]") {
			t.Errorf("redact(%q) = %q keeps the body", msg, got)
		}
	})
}

// FuzzRetryAfter checks that any header gives a wait within bounds.
func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"", "1", "-1", "1e9", "Wed, 21 Oct 2015 07:28:00 GMT", "99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if d := retryAfter(v, time.Now()); d < 0 || d > maxRetryAfter {
			t.Errorf("retryAfter(%q) = %v", v, d)
		}
	})
}
