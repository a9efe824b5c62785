package webhooks

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/sendgrid/sendgrid-go/helpers/eventwebhook"

	"github.com/heraldhq/herald/services/notifier"
)

// SendGrid's signed event webhook headers.
const (
	sgSignatureHeader = "X-Twilio-Email-Event-Webhook-Signature"
	sgTimestampHeader = "X-Twilio-Email-Event-Webhook-Timestamp"
)

// maxSignatureAge is how old (or how far ahead of this clock) a signed timestamp may be. An older
// request is a replay; within the window a replay is harmless, as every event is applied once.
const maxSignatureAge = 10 * time.Minute

// sendGrid serves SendGridPath.
func (h *Handler) sendGrid(w http.ResponseWriter, r *http.Request) {
	if h.sgKey == nil {
		http.NotFound(w, r)
		return
	}
	body, ok := h.readBody(w, r, maxSendGridBody)
	if !ok {
		return
	}
	now := time.Now()
	if err := verifySendGrid(h.sgKey, r.Header.Get(sgSignatureHeader), r.Header.Get(sgTimestampHeader), body, now); err != nil {
		h.refuse(w, r, sendGridProvider, err)
		return
	}
	evs, skipped, err := parseSendGrid(body, now)
	if err != nil {
		h.log.Warn("sendgrid webhook: not a JSON array of events", "bytes", len(body))
		http.Error(w, "body is not a JSON array of events", http.StatusBadRequest)
		return
	}
	if skipped > 0 {
		// Asking for them again would not make them readable.
		h.log.Warn("sendgrid webhook: unreadable events skipped", "skipped", skipped, "events", len(evs))
	}
	h.record(w, r, sendGridProvider, evs)
}

// verifySendGrid checks SendGrid's signature with sendgrid-go's eventwebhook (ECDSA P-256 over
// SHA-256 of the timestamp header followed by the body, ASN.1 DER, base64), and adds what the
// library leaves out: both headers are required, the signature is exactly one DER value, and the
// signed timestamp is recent.
func verifySendGrid(key *ecdsa.PublicKey, signature, timestamp string, body []byte, now time.Time) error {
	if signature == "" || timestamp == "" {
		return errors.New("signature or timestamp header missing")
	}
	der, err := base64.StdEncoding.DecodeString(signature)
	if err != nil {
		return errors.New("signature is not base64")
	}
	// eventwebhook.VerifySignature ignores whatever follows the DER signature, so a genuine
	// signature with bytes appended would pass; SendGrid's never carry any.
	var rs eventwebhook.RS
	if rest, err := asn1.Unmarshal(der, &rs); err != nil || len(rest) != 0 {
		return errors.New("signature is not one DER ECDSA signature")
	}
	if ok, err := eventwebhook.VerifySignature(key, body, signature, timestamp); err != nil || !ok {
		return errors.New("signature does not match")
	}
	secs, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return errors.New("timestamp is not a number")
	}
	if age := now.Sub(time.Unix(secs, 0)); age > maxSignatureAge || age < -maxSignatureAge {
		return fmt.Errorf("signed %v ago: a replay", age.Round(time.Second))
	}
	return nil
}

// parsePublicKey reads SendGrid's verification key: base64 of the DER SubjectPublicKeyInfo, as
// SendGrid shows it, or the same as PEM.
func parsePublicKey(s string) (k *ecdsa.PublicKey, err error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "-----BEGIN") {
		b, _ := pem.Decode([]byte(s))
		if b == nil || b.Type != "PUBLIC KEY" {
			return nil, errors.New("not a PEM public key")
		}
		s = base64.StdEncoding.EncodeToString(b.Bytes)
	}
	// eventwebhook.ConvertPublicKeyBase64ToECDSA asserts that the key is ECDSA without checking:
	// an RSA or Ed25519 key panics. It also takes any curve, where SendGrid signs with P-256.
	defer func() {
		if recover() != nil {
			k, err = nil, errors.New("not an ECDSA key")
		}
	}()
	k, err = eventwebhook.ConvertPublicKeyBase64ToECDSA(s)
	if err != nil {
		return nil, fmt.Errorf("neither PEM nor base64 of a public key: %w", err)
	}
	if k.Curve != elliptic.P256() {
		return nil, errors.New("not an ECDSA P-256 key")
	}
	return k, nil
}

// parseSendGrid translates a batch of SendGrid events. It fails only when body is not a JSON
// array; events it cannot use (no event id, not an object) are counted in skipped.
func parseSendGrid(body []byte, received time.Time) (evs []notifier.ProviderEvent, skipped int, err error) {
	var batch []json.RawMessage
	if err := json.Unmarshal(body, &batch); err != nil {
		return nil, 0, err
	}
	for _, raw := range batch {
		e, ok := sendGridEvent(raw, received)
		if !ok {
			skipped++
			continue
		}
		evs = append(evs, e)
	}
	return evs, skipped, nil
}

// sendGridKinds maps SendGrid's event names; any other is EventOther.
var sendGridKinds = map[string]notifier.ProviderEventKind{
	"processed":         notifier.EventAccepted,
	"deferred":          notifier.EventDeferred,
	"delivered":         notifier.EventDelivered,
	"bounce":            notifier.EventBounced,
	"dropped":           notifier.EventDropped,
	"open":              notifier.EventOpened,
	"click":             notifier.EventClicked,
	"spamreport":        notifier.EventSpamReport,
	"unsubscribe":       notifier.EventUnsubscribed,
	"group_unsubscribe": notifier.EventUnsubscribed,
}

// sendGridDetails are the fields kept for operators. Left out on purpose: email, ip, useragent
// and url (the recipient's data), smtp-id, category.
var sendGridDetails = []string{"event", "type", "status", "bounce_classification", "reason", "response",
	"sg_message_id", "notification_id", "asm_group_id", "attempt", "sg_machine_open", "tls"}

// smtpStatus matches an enhanced status code (RFC 3463), e.g. 5.1.1.
var smtpStatus = regexp.MustCompile(`^[245]\.[0-9]{1,3}\.[0-9]{1,3}$`)

// sendGridEvent translates one event of a batch. SendGrid puts the message's custom args
// (delivery_id, notification_id: see the workers' sendgrid package) at the event's top level.
func sendGridEvent(raw json.RawMessage, received time.Time) (notifier.ProviderEvent, bool) {
	var f map[string]json.RawMessage
	if err := json.Unmarshal(raw, &f); err != nil {
		return notifier.ProviderEvent{}, false
	}
	id := str(f, "sg_event_id")
	name := str(f, "event")
	if !validID(id) || name == "" {
		return notifier.ProviderEvent{}, false
	}
	e := notifier.ProviderEvent{
		Provider:   sendGridProvider,
		ID:         id,
		Kind:       sendGridKinds[name],
		OccurredAt: received,
	}
	if e.Kind == "" {
		e.Kind = notifier.EventOther
	}
	if pmid := messageID(str(f, "sg_message_id")); validID(pmid) {
		e.ProviderMessageID = pmid
	}
	if d, err := uuid.Parse(str(f, "delivery_id")); err == nil {
		e.DeliveryID = d
	}
	var ts json.Number
	if json.Unmarshal(f["timestamp"], &ts) == nil {
		if secs, err := ts.Int64(); err == nil && secs > 946684800 && secs < received.Add(24*time.Hour).Unix() {
			e.OccurredAt = time.Unix(secs, 0).UTC()
		}
	}
	status := str(f, "status")
	if !smtpStatus.MatchString(status) {
		status = ""
	}
	switch name {
	case "bounce":
		// A "blocked" bounce is the receiving server refusing this message (reputation,
		// content); SendGrid does not suppress the address, and neither does Herald.
		if str(f, "type") == "blocked" {
			e.Reason = strings.TrimSpace("blocked " + status)
		} else {
			e.Reason = strings.TrimSpace("hard_bounce " + status)
			e.Effect = notifier.AddressInvalid
		}
	case "dropped":
		e.Reason = "dropped"
		if why := clean(str(f, "reason"), 100); why != "" {
			e.Reason += ": " + why
		}
	case "spamreport", "unsubscribe", "group_unsubscribe":
		e.Effect = notifier.AddressOptedOut
	}
	details := map[string]any{}
	for _, k := range sendGridDetails {
		v, ok := f[k]
		if !ok {
			continue
		}
		var x any
		if json.Unmarshal(v, &x) != nil {
			continue
		}
		switch x := x.(type) {
		case string:
			details[k] = clean(x, maxDetail)
		case float64, bool:
			details[k] = x
		}
	}
	e.Details, _ = json.Marshal(details)
	return e, true
}

// messageID returns the X-Message-Id that the worker recorded, from an event's sg_message_id: the
// same followed by a suffix of SendGrid's, ".filterdrecv-...", ".recvd-...", or in older events
// ".filter0001...". (Older ids contain dots themselves: 14c5d75ce93.dfd.64b469.)
func messageID(sgMessageID string) string {
	for _, suffix := range []string{".filter", ".recvd"} {
		if i := strings.Index(sgMessageID, suffix); i >= 0 {
			return sgMessageID[:i]
		}
	}
	id, _, _ := strings.Cut(sgMessageID, ".")
	return id
}

// str returns f[k] if it is a JSON string, else "".
func str(f map[string]json.RawMessage, k string) string {
	var s string
	if json.Unmarshal(f[k], &s) != nil {
		return ""
	}
	return s
}
