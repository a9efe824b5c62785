package notifier_test

import (
	"context"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/preference"
	"github.com/heraldhq/herald/services/notifier"
)

// steps lists deliveries as "step channel state reason", in the order Send made them.
func steps(n *notifier.Notification) []string {
	var out []string
	for _, d := range n.Deliveries {
		s := string(rune('0'+d.Step)) + " " + string(d.Channel) + " " + string(d.State)
		if d.Reason != "" {
			s += " " + d.Reason
		}
		out = append(out, s)
	}
	return out
}

// TestSendFallback: a fallback chain starts at its first channel the recipient can be reached
// on; the later steps wait, unpublished, and only the first is published.
func TestSendFallback(t *testing.T) {
	tests := []struct {
		name     string
		addr     *notifier.Address
		fallback []delivery.Channel
		want     []string
	}{
		{"first reachable goes", &notifier.Address{Email: "a@example.com", Phone: "+14155550100"},
			[]delivery.Channel{delivery.Email, delivery.SMS},
			[]string{"1 email queued", "2 sms waiting"}},
		{"order is the caller's", &notifier.Address{Email: "a@example.com", Phone: "+14155550100"},
			[]delivery.Channel{delivery.SMS, delivery.Email},
			[]string{"1 sms queued", "2 email waiting"}},
		{"unreachable step is passed", &notifier.Address{Phone: "+14155550100"},
			[]delivery.Channel{delivery.Email, delivery.SMS, delivery.IOS},
			[]string{"1 email skipped no_address", "2 sms queued", "3 ios skipped no_address"}},
		{"several devices make one step", &notifier.Address{Email: "a@example.com", IOSTokens: []string{iosToken, iosToken2}},
			[]delivery.Channel{delivery.IOS, delivery.Email},
			[]string{"1 ios queued", "1 ios queued", "2 email waiting"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness()
			res := send(t, h, billing, &notifier.SendRequest{
				RequestHash: []byte("h"), Address: tt.addr, Category: "orders",
				Content:  &notifier.Content{Title: "Hi", Body: "Your order shipped", HTML: "<p>shipped</p>"},
				Fallback: &delivery.Fallback{Channels: tt.fallback, StepTimeout: time.Minute},
			})
			if got := steps(res.Notification); !slices.Equal(got, tt.want) {
				t.Errorf("deliveries %q, want %q", got, tt.want)
			}
			var want []uuid.UUID
			for _, d := range res.Notification.Deliveries {
				if d.StepTimeout != time.Minute {
					t.Errorf("step %d timeout %s, want 1m", d.Step, d.StepTimeout)
				}
				if d.State == delivery.Queued {
					want = append(want, d.ID)
				}
				if d.State == delivery.Waiting && (d.DueAt == nil || !d.DueAt.Equal(d.ExpiresAt)) {
					t.Errorf("waiting step due %v, want at its expiry %v", d.DueAt, d.ExpiresAt)
				}
			}
			var got []uuid.UUID
			for _, call := range h.pub.published() {
				for _, ids := range call {
					got = append(got, ids...)
				}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("published %v, want the first step %v", got, want)
			}
		})
	}
}

// TestSendFallbackOptedOut: a channel the user opted out of is passed like an unreachable one.
func TestSendFallbackOptedOut(t *testing.T) {
	h := newHarness()
	h.dir.users = map[string]notifier.User{"u1": {ID: "u1", Email: "u1@example.com", Phone: "+14155550100",
		Settings: &preference.Settings{OptedOutChannels: []delivery.Channel{delivery.Email}}}}
	res := send(t, h, billing, &notifier.SendRequest{
		RequestHash: []byte("h"), UserID: "u1", Category: "orders",
		Content:  &notifier.Content{Title: "Hi", Body: "Your order shipped"},
		Fallback: &delivery.Fallback{Channels: []delivery.Channel{delivery.Email, delivery.SMS}},
	})
	if got, want := steps(res.Notification), []string{"1 email skipped opted_out", "2 sms queued"}; !slices.Equal(got, want) {
		t.Errorf("deliveries %q, want %q", got, want)
	}
}

// TestSendCategoryFallback: a category's fallback applies to a Send that asks for no channels,
// and not to one that does.
func TestSendCategoryFallback(t *testing.T) {
	h := newHarness()
	if err := h.store.PutCategory(context.Background(), preference.Category{Name: "chain", DefaultOptIn: true,
		Fallback: &delivery.Fallback{Channels: []delivery.Channel{delivery.SMS, delivery.Email}}}); err != nil {
		t.Fatal(err)
	}
	addr := &notifier.Address{Email: "a@example.com", Phone: "+14155550100"}
	res := send(t, h, billing, &notifier.SendRequest{RequestHash: []byte("h"), Address: addr, Category: "chain",
		Content: &notifier.Content{Title: "Hi", Body: "b"}})
	if got, want := steps(res.Notification), []string{"1 sms queued", "2 email waiting"}; !slices.Equal(got, want) {
		t.Errorf("deliveries %q, want %q", got, want)
	}
	res = send(t, h, billing, &notifier.SendRequest{RequestHash: []byte("h2"), Address: addr, Category: "chain",
		Channels: []delivery.Channel{delivery.Email, delivery.SMS}, Content: &notifier.Content{Title: "Hi", Body: "b"}})
	if got, want := steps(res.Notification), []string{"0 email queued", "0 sms queued"}; !slices.Equal(got, want) {
		t.Errorf("with channels: deliveries %q, want %q", got, want)
	}
}

// TestSendFallbackInvalid: a fallback with channels is refused naming the field.
func TestSendFallbackInvalid(t *testing.T) {
	h := newHarness()
	for _, tt := range []struct {
		name string
		req  notifier.SendRequest
		want []string
	}{
		{"with channels", notifier.SendRequest{Channels: []delivery.Channel{delivery.Email},
			Fallback: &delivery.Fallback{Channels: []delivery.Channel{delivery.Email, delivery.SMS}}}, []string{"fallback"}},
		{"timeout past ttl", notifier.SendRequest{TTL: time.Minute,
			Fallback: &delivery.Fallback{Channels: []delivery.Channel{delivery.Email, delivery.SMS}, StepTimeout: time.Hour}},
			[]string{"fallback.step_timeout"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req
			req.Address, req.Category = &notifier.Address{Email: "a@example.com"}, "orders"
			req.Content = &notifier.Content{Title: "Hi", Body: "b"}
			_, err := h.svc.Send(context.Background(), billing, &req)
			if got := fields(err); !slices.Equal(got, tt.want) {
				t.Errorf("fields %q, want %q (%v)", got, tt.want, err)
			}
		})
	}
}
