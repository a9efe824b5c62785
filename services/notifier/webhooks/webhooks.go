// Package webhooks serves the providers' status webhooks: SendGrid's event webhook and Twilio's
// status callback. Each request is authenticated (SendGrid's ECDSA signature, Twilio's
// X-Twilio-Signature), translated into notifier.ProviderEvents, recorded once in the Store (which
// moves the deliveries to delivered or bounced), and what an event says about the recipient's
// address (a hard bounce, an unsubscribe, a spam report, an unreachable number, an SMS STOP) is
// published as a fact on the events stream for the contacts service.
//
// The answer is 200 once the events are recorded and their facts published, and 5xx when either
// failed, so that the provider sends the batch again; repeated events are recognised by their id
// and applied once. Addresses, phone numbers and message bodies are never logged or stored with
// the events.
//
// What each event does (state changes apply to a delivery that is sent, or whose send the worker
// has not recorded yet: see notifier.ProviderEventFrom):
//
//	SendGrid event                  delivery          fact
//	processed, deferred             -                 -
//	delivered                       delivered         -
//	bounce, type bounce             bounced           events.EmailInvalid
//	bounce, type blocked            bounced           -
//	dropped                         bounced           -
//	open, click                     -                 -
//	spamreport                      -                 events.OptedOut (email)
//	unsubscribe, group_unsubscribe  -                 events.OptedOut (email)
//
//	Twilio MessageStatus            delivery          fact
//	queued, sending, sent, ...      -                 -
//	delivered                       delivered         -
//	undelivered, failed             bounced           ErrorCode 30003, 30005, 30006: events.NumberInvalid
//	                                                  ErrorCode 21610: events.OptedOut (sms)
//
// Every event is stored, also when it changes nothing or its delivery is unknown.
package webhooks

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twilio/twilio-go/client"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/events"
	"github.com/heraldhq/herald/services/notifier"
)

// The routes the Handler serves.
const (
	SendGridPath = "/webhooks/sendgrid/events"
	TwilioPath   = "/webhooks/twilio/status"
)

// Provider names, as the workers record them on deliveries.
const (
	sendGridProvider = "sendgrid"
	twilioProvider   = "twilio"
)

const (
	// maxSendGridBody bounds a SendGrid batch. SendGrid posts a batch every 30 seconds or when
	// it reaches 768 KB; a batch refused for its size would come back forever.
	maxSendGridBody = 8 << 20
	// maxTwilioBody bounds one status callback, a short form.
	maxTwilioBody = 64 << 10
	// handleTimeout bounds recording the events and publishing their facts.
	handleTimeout = 20 * time.Second
)

// Store records provider events; postgres.Store implements it.
type Store interface {
	RecordProviderEvents(ctx context.Context, events []notifier.ProviderEvent) ([]notifier.ProviderEvent, error)
	MarkProviderEventsAnnounced(ctx context.Context, provider string, ids []string) error
}

// PublishFunc publishes one fact on the events stream and waits for the stream to store it;
// events.Publish on a JetStream is one.
type PublishFunc func(ctx context.Context, subject string, e events.Event) error

// Config configures a Handler. A webhook whose secret is empty is off: its route answers 404.
type Config struct {
	// PublicURL is the notifier's HTTP base URL as the providers reach it, including any path
	// prefix a proxy strips (https://herald.example.com). Twilio signs the URL it posts to, so
	// PublicURL + TwilioPath (+ query) must be the status callback URL the workers give Twilio.
	// Required with TwilioAuthToken.
	PublicURL string
	// SendGridPublicKey is the event webhook's verification key, as SendGrid's settings show it
	// (base64 of the DER key) or as PEM. It must be an ECDSA P-256 key.
	SendGridPublicKey string
	// TwilioAuthToken is the account's auth token, which signs Twilio's callbacks (also when
	// the workers send with an API key).
	TwilioAuthToken string
	// JS is where facts are published, unless Publish is set.
	JS jetstream.JetStream
	// Publish, when set, publishes the facts instead of events.Publish on JS.
	Publish PublishFunc
	Store   Store
	Log     *slog.Logger
	// Received, when set, counts the events received (herald_provider_events_total{provider,kind}).
	Received *prometheus.CounterVec
}

// Handler serves SendGridPath and TwilioPath. Register it on the notifier's HTTP mux under
// "/webhooks/".
type Handler struct {
	received  *prometheus.CounterVec
	mux       *http.ServeMux
	sgKey     *ecdsa.PublicKey
	twilio    *client.RequestValidator
	publicURL string
	store     Store
	publish   PublishFunc
	log       *slog.Logger
}

// New returns a Handler for cfg, or an error naming the first invalid setting (never a secret).
func New(cfg Config) (*Handler, error) {
	h := &Handler{mux: http.NewServeMux(), store: cfg.Store, publish: cfg.Publish, log: cfg.Log, received: cfg.Received}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if cfg.Store == nil {
		return nil, errors.New("webhooks: no store")
	}
	if cfg.SendGridPublicKey != "" {
		k, err := parsePublicKey(cfg.SendGridPublicKey)
		if err != nil {
			return nil, fmt.Errorf("webhooks: SendGrid public key: %w", err)
		}
		h.sgKey = k
	}
	if cfg.TwilioAuthToken != "" {
		u, err := url.Parse(cfg.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
			u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("webhooks: public URL %q is not an http(s) URL without query", cfg.PublicURL)
		}
		v := client.NewRequestValidator(cfg.TwilioAuthToken)
		h.twilio, h.publicURL = &v, strings.TrimRight(cfg.PublicURL, "/")
	}
	if h.publish == nil {
		if cfg.JS == nil && (h.sgKey != nil || h.twilio != nil) {
			return nil, errors.New("webhooks: no JetStream to publish address facts on")
		}
		js := cfg.JS
		h.publish = func(ctx context.Context, subject string, e events.Event) error {
			return events.Publish(ctx, js, subject, e)
		}
	}
	h.mux.HandleFunc("POST "+SendGridPath, h.sendGrid)
	h.mux.HandleFunc("POST "+TwilioPath, h.twilioStatus)
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// readBody reads r's body up to limit bytes, answering the request itself when it cannot.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	// The server bounds the time the body takes to arrive (server.BodyTimeout).
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		h.log.Warn("webhook body too large", "path", r.URL.Path, "limit", limit)
		http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
		return nil, false
	case err != nil:
		http.Error(w, "cannot read request body", http.StatusBadRequest)
		return nil, false
	}
	return body, true
}

// refuse answers a request whose signature does not hold.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, provider string, err error) {
	h.log.Warn("webhook refused", "provider", provider, "remote", r.RemoteAddr, "err", err)
	http.Error(w, "forbidden", http.StatusForbidden)
}

// record stores evs, publishes the facts of those that carry one, and answers the provider: 200
// when all is done, 503 when the provider should send the events again.
func (h *Handler) record(w http.ResponseWriter, r *http.Request, provider string, evs []notifier.ProviderEvent) {
	ctx, cancel := context.WithTimeout(r.Context(), handleTimeout)
	defer cancel()
	if h.received != nil {
		for _, e := range evs {
			h.received.WithLabelValues(e.Provider, string(e.Kind)).Inc()
		}
	}
	act, err := h.store.RecordProviderEvents(ctx, evs)
	if err != nil {
		h.log.Error("record provider events", "provider", provider, "events", len(evs), "err", err)
		http.Error(w, "try again later", http.StatusServiceUnavailable)
		return
	}
	facts, err := h.announce(ctx, provider, act)
	if err != nil {
		h.log.Error("announce provider events", "provider", provider, "events", len(evs), "err", err)
		http.Error(w, "try again later", http.StatusServiceUnavailable)
		return
	}
	h.log.Debug("provider events", "provider", provider, "events", len(evs), "acted_on", len(act), "facts", facts)
	w.WriteHeader(http.StatusOK)
}

// announce publishes the address facts of evs and marks them announced. It returns how many
// facts it published, and an error when any could not be published or marked, so that the
// provider sends the events again (a fact published twice is harmless: its id is the same and
// the contacts service applies facts idempotently).
func (h *Handler) announce(ctx context.Context, provider string, evs []notifier.ProviderEvent) (int, error) {
	var done []string
	var errs []error
	published := 0
	for _, e := range evs {
		if e.Effect == notifier.NoAddressEffect || e.DeliveryID == uuid.Nil {
			continue
		}
		subject, reason := fact(e)
		if subject == "" || e.Address == "" { // nothing to say, or the user was erased
			done = append(done, e.ID)
			continue
		}
		err := h.publish(ctx, subject, events.Event{
			ID:         factID(provider, e.ID),
			At:         e.OccurredAt,
			DeliveryID: e.DeliveryID,
			UserID:     e.UserID,
			Channel:    e.Channel,
			Address:    e.Address,
			Category:   e.Category,
			Reason:     reason,
			Since:      e.OccurredAt,
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("event %s of delivery %s: %w", e.ID, e.DeliveryID, err))
			continue
		}
		h.log.Info("address fact published", "provider", provider, "event", e.ID, "delivery", e.DeliveryID,
			"subject", subject, "reason", reason)
		published++
		done = append(done, e.ID)
	}
	if err := h.store.MarkProviderEventsAnnounced(ctx, provider, done); err != nil {
		errs = append(errs, fmt.Errorf("mark announced: %w", err))
	}
	return published, errors.Join(errs...)
}

// fact returns the subject and reason of the fact that e states about its address, or "" when
// there is none for its channel.
func fact(e notifier.ProviderEvent) (subject, reason string) {
	switch {
	case e.Effect == notifier.AddressInvalid && e.Channel == delivery.Email:
		return events.EmailInvalid, "hard_bounce"
	case e.Effect == notifier.AddressInvalid && e.Channel == delivery.SMS:
		return events.NumberInvalid, "invalid_number"
	case e.Effect == notifier.AddressOptedOut && e.Kind == notifier.EventSpamReport:
		return events.OptedOut, "spam_report"
	case e.Effect == notifier.AddressOptedOut && e.Channel == delivery.Email:
		return events.OptedOut, "unsubscribed"
	case e.Effect == notifier.AddressOptedOut:
		return events.OptedOut, "opted_out"
	}
	return "", ""
}

// factNamespace makes a fact's id a function of its provider event, so that a fact published
// again (the provider repeated a batch whose facts were not all published) has the same id and
// the stream drops the copy.
var factNamespace = uuid.MustParse("6f1c9f59-3a43-4a0e-9d55-3c1b2f4f3c01")

func factID(provider, eventID string) uuid.UUID {
	return uuid.NewSHA1(factNamespace, []byte(provider+"\x00"+eventID))
}
