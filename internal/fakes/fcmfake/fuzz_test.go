package fcmfake

import (
	"net/http"
	"testing"
)

// FuzzDecodeSend checks that any body gets an answer, and that what the fake accepts is what
// FCM would: exactly one target and a payload within the limit.
func FuzzDecodeSend(f *testing.F) {
	for _, s := range []string{
		`{"message": {"token": "fTestDeviceToken0123456789:APA91bHun4Mx", "notification": {"title": "t", "body": "b"}, "data": {"k": "v"}, "android": {"priority": "HIGH", "ttl": "3600s"}}}`,
		`{"validate_only": true, "message": {"topic": "/topics/news"}}`,
		`{"message": {"condition": "'a' in topics", "android": {"data": {"n": 1}}}}`,
		`{"message": {"token": "x", "topic": "y"}}`,
		`{"message": {"data": {"from": "x"}}}`,
		`{"message": {"android": {"ttl": "1.000000001s"}}}`,
		`{`, `null`, `[]`, `{"message": null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, e := decodeSend(body)
		if e != nil {
			if e.code != http.StatusBadRequest || e.msg == "" {
				t.Fatalf("error answer %+v", e)
			}
			return
		}
		m := req.msg
		targets := 0
		for _, s := range []string{m.Token, m.Topic, m.Condition} {
			if s != "" {
				targets++
			}
		}
		if targets != 1 {
			t.Fatalf("accepted %d targets", targets)
		}
		n := 0
		if m.Notification != nil {
			n += len(m.Notification.Title) + len(m.Notification.Body)
		}
		data := m.Data
		if m.Android != nil && m.Android.Data != nil {
			data = m.Android.Data
		}
		for k, v := range data {
			n += len(k) + len(v)
		}
		if n > MaxPayloadBytes {
			t.Fatalf("accepted a payload of %d bytes", n)
		}
		if m.Android != nil && m.Android.TTL != nil && (*m.Android.TTL < 0 || *m.Android.TTL > MaxTTL) {
			t.Fatalf("accepted ttl %v", *m.Android.TTL)
		}
	})
}
