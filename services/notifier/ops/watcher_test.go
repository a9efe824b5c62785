package ops

import (
	"reflect"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/workerstatus"
)

// TestCountRoutes: a channel with several credentials shows a circuit per credential, in their
// order, the active one marked; its sends count once, for the channel.
func TestCountRoutes(t *testing.T) {
	at := time.Date(2026, 12, 7, 2, 0, 0, 0, time.UTC)
	w := &Watcher{last: map[string]workerstatus.State{}, sum: map[string]counts{}}
	got := w.count([]workerstatus.State{
		{Channel: "sms", Provider: "twilio", Worker: "w-1", Circuit: "closed", Sent: 3, Updated: at},
		{Channel: "email", Provider: "smtp/backup", Worker: "w-1", Circuit: "closed", Sent: 10, Updated: at,
			Routes: []workerstatus.Route{
				{Provider: "sendgrid/primary", Circuit: "open"},
				{Provider: "smtp/backup", Circuit: "closed", Active: true},
			}},
	})
	want := []Circuit{
		{Channel: "email", Provider: "sendgrid/primary", Worker: "w-1", State: "open", Updated: at},
		{Channel: "email", Provider: "smtp/backup", Worker: "w-1", State: "closed", Updated: at, Active: true},
		{Channel: "sms", Provider: "twilio", Worker: "w-1", State: "closed", Updated: at},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("circuits\n got %+v\nwant %+v", got, want)
	}
	if s := w.sum["email"].sent; s != 10 {
		t.Errorf("email sends counted %v, want 10", s)
	}
}
