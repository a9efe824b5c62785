package webhooks

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/services/notifier"
)

// twilioSignatureHeader carries Twilio's HMAC-SHA1 of the URL and the sorted form parameters.
const twilioSignatureHeader = "X-Twilio-Signature"

// twilioStatus serves TwilioPath.
func (h *Handler) twilioStatus(w http.ResponseWriter, r *http.Request) {
	if h.twilio == nil {
		http.NotFound(w, r)
		return
	}
	body, ok := h.readBody(w, r, maxTwilioBody)
	if !ok {
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		http.Error(w, "body is not a form", http.StatusBadRequest)
		return
	}
	if err := h.verifyTwilio(r, form); err != nil {
		h.refuse(w, r, twilioProvider, err)
		return
	}
	e, err := parseTwilio(form, r.URL.Query(), time.Now())
	if err != nil {
		h.log.Warn("twilio status callback unreadable", "err", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h.record(w, r, twilioProvider, []notifier.ProviderEvent{e})
}

// verifyTwilio checks X-Twilio-Signature against the URL Twilio posted to (PublicURL, the path
// and the query) and the form, with twilio-go's validator (which also tries the URL with and
// without its default port, as Twilio signs either).
func (h *Handler) verifyTwilio(r *http.Request, form url.Values) error {
	sig := r.Header.Get(twilioSignatureHeader)
	if sig == "" {
		return errors.New("signature header missing")
	}
	u := h.publicURL + r.URL.EscapedPath()
	if r.URL.RawQuery != "" {
		u += "?" + r.URL.RawQuery
	}
	params := make(map[string]string, len(form))
	for k, vs := range form {
		if len(vs) != 1 {
			return errors.New("a form parameter is repeated") // Twilio's status callbacks never do
		}
		params[k] = vs[0]
	}
	if !h.twilio.Validate(u, params, sig) {
		return errors.New("signature does not match")
	}
	return nil
}

// twilioKinds maps Twilio's message statuses; any other (canceled, partially_delivered) is
// EventOther.
var twilioKinds = map[string]notifier.ProviderEventKind{
	"accepted":    notifier.EventAccepted,
	"scheduled":   notifier.EventAccepted,
	"queued":      notifier.EventAccepted,
	"sending":     notifier.EventAccepted,
	"sent":        notifier.EventAccepted,
	"delivered":   notifier.EventDelivered,
	"undelivered": notifier.EventBounced,
	"failed":      notifier.EventDropped,
	"read":        notifier.EventOpened,
}

// twilioEffects are the error codes of a failed or undelivered message that say something about
// the number.
var twilioEffects = map[string]notifier.AddressEffect{
	"30003": notifier.AddressInvalid,  // unreachable destination handset
	"30005": notifier.AddressInvalid,  // unknown destination handset
	"30006": notifier.AddressInvalid,  // landline or unreachable carrier
	"21610": notifier.AddressOptedOut, // the recipient replied STOP
}

// twilioDetails are the form fields kept for operators; To, From and Body are left out.
var twilioDetails = []string{"MessageStatus", "ErrorCode", "AccountSid", "MessagingServiceSid", "ApiVersion",
	"RawDlrDoneDate"}

var (
	twilioSID    = regexp.MustCompile(`^[A-Z]{2}[0-9a-fA-F]{32}$`)
	twilioStatus = regexp.MustCompile(`^[a-z_]{1,32}$`)
	twilioCode   = regexp.MustCompile(`^[0-9]{1,6}$`)
)

// parseTwilio translates one status callback. The event id is the message SID and the status:
// Twilio calls back once per status. query is the callback URL's query, which may name the
// delivery (delivery_id); Twilio signs it with the rest.
func parseTwilio(form, query url.Values, received time.Time) (notifier.ProviderEvent, error) {
	sid := first(form, "MessageSid", "SmsSid")
	status := first(form, "MessageStatus", "SmsStatus")
	if !twilioSID.MatchString(sid) {
		return notifier.ProviderEvent{}, errors.New("no valid MessageSid")
	}
	if !twilioStatus.MatchString(status) {
		return notifier.ProviderEvent{}, errors.New("no valid MessageStatus")
	}
	e := notifier.ProviderEvent{
		Provider:          twilioProvider,
		ID:                sid + ":" + status,
		Kind:              twilioKinds[status],
		ProviderMessageID: sid,
		OccurredAt:        received,
	}
	if e.Kind == "" {
		e.Kind = notifier.EventOther
	}
	if d, err := uuid.Parse(query.Get("delivery_id")); err == nil {
		e.DeliveryID = d
	}
	if e.Kind == notifier.EventBounced || e.Kind == notifier.EventDropped {
		code := form.Get("ErrorCode")
		if !twilioCode.MatchString(code) {
			code = ""
		}
		e.Reason = strings.TrimSpace(status + " " + code)
		e.Effect = twilioEffects[code]
	}
	details := map[string]string{}
	for _, k := range twilioDetails {
		if v := clean(form.Get(k), maxDetail); v != "" {
			details[k] = v
		}
	}
	e.Details, _ = json.Marshal(details)
	return e, nil
}

// first returns the first of the fields that is set: Twilio still sends the older Sms* names.
func first(form url.Values, keys ...string) string {
	for _, k := range keys {
		if v := form.Get(k); v != "" {
			return v
		}
	}
	return ""
}
