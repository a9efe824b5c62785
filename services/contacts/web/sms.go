package web

import (
	"bytes"
	"encoding/xml"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"github.com/heraldhq/herald/internal/address"
)

// smsCommand is what an inbound text asks for.
type smsCommand int

const (
	smsNone smsCommand = iota
	smsStop
	smsStart
	smsHelp
)

// smsKeywords are the opt-out, opt-in and help keywords carriers and Twilio recognise. Only a
// message that is exactly one of them, ignoring case and surrounding space, counts.
var smsKeywords = map[string]smsCommand{
	"STOP": smsStop, "STOPALL": smsStop, "UNSUBSCRIBE": smsStop, "CANCEL": smsStop,
	"END": smsStop, "QUIT": smsStop, "OPTOUT": smsStop, "REVOKE": smsStop,
	"START": smsStart, "YES": smsStart, "UNSTOP": smsStart, "OPTIN": smsStart,
	"HELP": smsHelp, "INFO": smsHelp,
}

func parseSMSCommand(body string) smsCommand {
	return smsKeywords[strings.ToUpper(strings.TrimSpace(body))]
}

// inboundSMS serves POST /webhooks/twilio/inbound, Twilio's form post for a text sent to one
// of our numbers: STOP and its variants suppress the sender's number for every category,
// START lifts that, HELP answers with the help text; a message (by its SID) is applied once
// however often it is posted. It answers TwiML. It never logs the number or the text.
func (h *Handler) inboundSMS(w http.ResponseWriter, r *http.Request) {
	if h.cfg.TwilioAuthToken == "" {
		http.NotFound(w, r)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxForm))
	if err != nil {
		http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
		return
	}
	// Twilio signs the URL it was configured with, which is the public one, not the one this
	// process sees behind its proxies.
	signed := h.cfg.PublicURL + r.URL.RequestURI()
	sig := r.Header.Get("X-Twilio-Signature")
	if sig == "" || !h.validator.ValidateBody(signed, body, sig) {
		h.log.WarnContext(r.Context(), "web: inbound SMS with a bad signature", "signed", sig != "")
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	cmd := parseSMSCommand(form.Get("Body"))
	if cmd == smsHelp {
		writeTwiML(w, h.cfg.SMSHelpText)
		return
	}
	if cmd == smsNone {
		writeTwiML(w, "")
		return
	}
	from, err := address.Phone(form.Get("From"))
	if err != nil {
		h.log.WarnContext(r.Context(), "web: inbound SMS from a number that does not parse; ignored", "sid", form.Get("MessageSid"))
		writeTwiML(w, "")
		return
	}
	sid := form.Get("MessageSid")
	if !messageSID.MatchString(sid) {
		// Twilio always names the message; without a name, a replay could not be told apart.
		h.log.WarnContext(r.Context(), "web: inbound SMS keyword without a message SID; ignored")
		writeTwiML(w, "")
		return
	}
	applied, err := h.svc.SMSKeyword(r.Context(), sid, from, cmd == smsStop)
	if err != nil {
		// Twilio retries nothing, but an error in its console is better than a silent loss.
		h.log.ErrorContext(r.Context(), "web: apply inbound SMS keyword", "sid", sid, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	if !applied {
		h.log.WarnContext(r.Context(), "web: inbound SMS keyword seen before; not applied again", "stop", cmd == smsStop, "sid", sid)
	} else {
		h.log.InfoContext(r.Context(), "web: inbound SMS keyword applied", "stop", cmd == smsStop, "sid", sid)
	}
	writeTwiML(w, "")
}

// messageSID matches the SID of an SMS or MMS Twilio received.
var messageSID = regexp.MustCompile(`^(SM|MM)[0-9a-fA-F]{32}$`)

// writeTwiML answers Twilio with a reply text, or with nothing when text is empty.
func writeTwiML(w http.ResponseWriter, text string) {
	var b bytes.Buffer
	b.WriteString(xml.Header)
	if text == "" {
		b.WriteString("<Response/>")
	} else {
		b.WriteString("<Response><Message>")
		xml.EscapeText(&b, []byte(text))
		b.WriteString("</Message></Response>")
	}
	hd := w.Header()
	hd.Set("Content-Type", "text/xml; charset=utf-8")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	w.Write(b.Bytes())
}
