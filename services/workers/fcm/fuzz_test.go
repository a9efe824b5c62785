package fcm

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/services/workers"
)

// FuzzOutcome feeds arbitrary answers through the parser and the outcome table: every answer
// gets an outcome, waits stay within bounds, and no error carries the token or the content.
func FuzzOutcome(f *testing.F) {
	const token = "fuzzDeviceToken0123456789:APA91bTokenTail"
	seeds := []struct {
		status int
		body   string
		ra     string
	}{
		{200, `{"name":"projects/p/messages/0:1"}`, ""},
		{404, `{"error":{"code":404,"message":"Requested entity was not found.","status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}`, ""},
		{400, `{"error":{"code":400,"message":"The registration token is not a valid FCM registration token","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"INVALID_ARGUMENT"},{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"message.token","description":"x"}]}]}}`, ""},
		{400, `{"error":{"code":400,"message":"Invalid value for ` + token + `","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"` + token + `"}]}]}}`, ""},
		{429, `{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"QUOTA_EXCEEDED"}]}}`, "30"},
		{503, `<html>` + token + `</html>`, "Wed, 21 Oct 2099 07:28:00 GMT"},
		{302, ``, "-5"},
	}
	for _, s := range seeds {
		f.Add(s.status, []byte(s.body), s.ra)
	}
	m := &workers.Message{
		DeliveryID: uuid.MustParse("01920000-0000-7000-8000-000000000000"),
		Channel:    delivery.Android,
		To:         token,
		Content:    delivery.Content{Title: "fuzz title", Body: "fuzz body text", Data: map[string]any{"k": "fuzz data value"}},
	}
	f.Fuzz(func(t *testing.T, status int, body []byte, ra string) {
		status = 100 + (status%900+900)%900
		a := parseAnswer(status, http.Header{"Retry-After": {ra}}, body, nil)
		_, err := outcome(exchange{answer: a}, "", m)
		o, _, wait := workers.Classify(err)
		if (status/100 == 2) != (o == workers.OutcomeSent) {
			t.Fatalf("status %d gave outcome %v (%v)", status, o, err)
		}
		if wait < 0 || wait > maxRetryAfter || wait > 0 && o != workers.OutcomeRetry {
			t.Fatalf("wait %v with outcome %v", wait, o)
		}
		if err == nil {
			return
		}
		for _, secret := range []string{token, "fuzz title", "fuzz body text", "fuzz data value"} {
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("error %q contains %q", err, secret)
			}
		}
		if len(err.Error()) > 2000 {
			t.Fatalf("error of %d bytes", len(err.Error()))
		}
	})
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		header string
		want   time.Duration
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
		if got := retryAfter(http.Header{"Retry-After": {tt.header}}, now); got != tt.want {
			t.Errorf("Retry-After %q: %v, want %v", tt.header, got, tt.want)
		}
	}
}
