// Package sim is Herald's built-in provider simulator, which lets the dev stack (`make run`)
// send notifications on every channel with no provider credentials and show what was sent.
//
// The Server is a small HTTP service on loopback that plays the provider: it records messages in
// memory, lists them as JSON and shows them on a plain HTML page. The Sender is the
// workers.Sender that talks to it. Addresses choose the answer, so that failures can be
// exercised by hand:
//
//   - an address that contains "+fail" or starts with "fail" (fail@example.com,
//     ada+fail@example.com, fail-permanent) is rejected with 400: a permanent failure;
//   - an address that contains "+flaky" is answered 503 on the first two attempts of each
//     delivery and accepted on the third: transient failures, then success;
//   - anything else is accepted.
//
// The wire format: POST /v1/messages takes
// {"delivery_id", "notification_id", "channel", "to", "content": {"title", "body", "subject",
// "html", "text", "data"}} and answers 200 {"id": "sim-..."} or an error status with
// {"error": "..."}. GET /v1/messages lists recorded messages, newest first, as
// {"messages": [...]}, filtered by ?channel= and ?delivery_id=. GET / shows the same as HTML.
// GET /healthz and /readyz answer 200 for the probes of a simulator run on its own (cmd/sim).
package sim

import (
	"time"

	"github.com/heraldhq/herald/internal/delivery"
)

// Capacity is how many messages a Server keeps; older ones are forgotten.
const Capacity = 1000

// Message is one message the simulator accepted.
type Message struct {
	ID             string           `json:"id"`
	DeliveryID     string           `json:"delivery_id"`
	NotificationID string           `json:"notification_id"`
	Channel        delivery.Channel `json:"channel"`
	To             string           `json:"to"`
	Content        delivery.Content `json:"content"`
	ReceivedAt     time.Time        `json:"received_at"`
}

// sendRequest is the body of POST /v1/messages.
type sendRequest struct {
	DeliveryID     string           `json:"delivery_id"`
	NotificationID string           `json:"notification_id"`
	Channel        delivery.Channel `json:"channel"`
	To             string           `json:"to"`
	Content        delivery.Content `json:"content"`
}

// sendResponse is the body of a 200 answer to POST /v1/messages.
type sendResponse struct {
	ID string `json:"id"`
}

// errorResponse is the body of every error answer.
type errorResponse struct {
	Error string `json:"error"`
}
