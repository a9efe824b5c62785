package fcm

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/heraldhq/herald/internal/pgtext"
	"github.com/heraldhq/herald/services/workers"
)

// FCM's error codes, from the google.firebase.fcm.v1.FcmError detail of an error answer.
const (
	codeUnregistered     = "UNREGISTERED"
	codeInvalidArgument  = "INVALID_ARGUMENT"
	codeSenderIDMismatch = "SENDER_ID_MISMATCH"
	codeQuotaExceeded    = "QUOTA_EXCEEDED"
	codeUnavailable      = "UNAVAILABLE"
	codeInternal         = "INTERNAL"
	codeThirdPartyAuth   = "THIRD_PARTY_AUTH_ERROR"
	codeAPNSAuth         = "APNS_AUTH_ERROR" // THIRD_PARTY_AUTH_ERROR's older name
)

// tokenField is the field a BadRequest violation names when FCM refuses the token.
const tokenField = "message.token"

// invalidTokenMessage is FCM's message for a malformed token, which the outcome table trusts
// only when FCM sends no field violations at all.
const invalidTokenMessage = "The registration token is not a valid FCM registration token"

// answer is FCM's HTTP answer to one request, with Google's error body decoded.
type answer struct {
	status int
	header http.Header
	body   []byte
	// From Google's error body {"error":{"code","message","status","details"}}, when it is one:
	gstatus string   // error.status, e.g. "NOT_FOUND"
	message string   // error.message, as FCM wrote it: it must be redacted before use
	fcmCode string   // the FcmError detail's errorCode, e.g. "UNREGISTERED"
	fields  []string // the fields of the BadRequest detail's violations
}

// parseAnswer decodes an answer. A body that is not Google's error JSON leaves the error fields
// empty; readErr, a body cut short, does the same.
func parseAnswer(status int, h http.Header, body []byte, readErr error) *answer {
	a := &answer{status: status, header: h, body: body}
	if status/100 == 2 || readErr != nil {
		return a
	}
	var e struct {
		Error struct {
			Message string `json:"message"`
			Status  string `json:"status"`
			Details []struct {
				Type            string `json:"@type"`
				ErrorCode       string `json:"errorCode"`
				FieldViolations []struct {
					Field string `json:"field"`
				} `json:"fieldViolations"`
			} `json:"details"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil {
		return a
	}
	a.gstatus, a.message = e.Error.Status, e.Error.Message
	for _, d := range e.Error.Details {
		switch d.Type {
		case "type.googleapis.com/google.firebase.fcm.v1.FcmError":
			if a.fcmCode == "" {
				a.fcmCode = d.ErrorCode
			}
		case "type.googleapis.com/google.rpc.BadRequest":
			for _, v := range d.FieldViolations {
				a.fields = append(a.fields, v.Field)
			}
		}
	}
	return a
}

// exchange is what one Send produced: an answer, or the error that stood in for one.
type exchange struct {
	answer *answer
	// err is the transport's error when there is no answer: a *tokenError when no access token
	// could be had, a network error otherwise.
	err error
	// ctxErr is set when Send's context had ended by the time the SDK returned.
	ctxErr error
}

// class is what a row of the outcome table makes of a delivery.
type class int

const (
	sent class = iota
	permanent
	transient
	misconfigured
)

// rule is one row of the outcome table.
type rule struct {
	row    string // the row's name in the package documentation
	match  func(*exchange) bool
	class  class
	reason string // for permanent rows
	effect workers.Effect
}

// outcomeTable maps what one Send produced to an outcome; the first row that matches decides.
// The rows, as the package documentation lists them:
//
//   - 2xx: sent.
//   - UNREGISTERED: permanent "unregistered", deactivate the token.
//   - INVALID_ARGUMENT about message.token: permanent "bad_token", deactivate the token.
//   - INVALID_ARGUMENT: permanent "rejected".
//   - SENDER_ID_MISMATCH: permanent "sender_id_mismatch", deactivate the token.
//   - QUOTA_EXCEEDED, UNAVAILABLE, INTERNAL: transient, with Retry-After.
//   - THIRD_PARTY_AUTH_ERROR (or APNS_AUTH_ERROR): misconfigured.
//   - 401 or 403 otherwise, 404 otherwise: misconfigured.
//   - 408, 429 or 5xx otherwise: transient, with Retry-After.
//   - other 4xx: permanent "rejected"; any other status: transient.
//   - the token endpoint refuses the credentials: misconfigured; fails otherwise: transient.
//   - network error, dropped connection, timeout: transient.
var outcomeTable = []rule{
	{row: "2xx", class: sent, match: answered(func(a *answer) bool { return a.status/100 == 2 })},
	{row: "UNREGISTERED", class: permanent, reason: "unregistered", effect: workers.DeactivateToken,
		match: fcmCode(codeUnregistered)},
	{row: "INVALID_ARGUMENT about message.token", class: permanent, reason: "bad_token", effect: workers.DeactivateToken,
		match: answered(func(a *answer) bool { return a.status == http.StatusBadRequest && invalidArgument(a) && aboutToken(a) })},
	{row: "INVALID_ARGUMENT", class: permanent, reason: "rejected",
		match: answered(invalidArgument)},
	{row: "SENDER_ID_MISMATCH", class: permanent, reason: "sender_id_mismatch", effect: workers.DeactivateToken,
		match: fcmCode(codeSenderIDMismatch)},
	{row: "QUOTA_EXCEEDED", class: transient, match: fcmCode(codeQuotaExceeded)},
	{row: "UNAVAILABLE", class: transient, match: fcmCode(codeUnavailable)},
	{row: "INTERNAL", class: transient, match: fcmCode(codeInternal)},
	{row: "THIRD_PARTY_AUTH_ERROR", class: misconfigured, match: fcmCode(codeThirdPartyAuth, codeAPNSAuth)},
	{row: "401 or 403 otherwise", class: misconfigured, match: status(http.StatusUnauthorized, http.StatusForbidden)},
	{row: "404 otherwise", class: misconfigured, match: status(http.StatusNotFound)},
	{row: "408, 429 or 5xx otherwise", class: transient, match: answered(func(a *answer) bool {
		return a.status == http.StatusRequestTimeout || a.status == http.StatusTooManyRequests || a.status/100 == 5
	})},
	{row: "other 4xx", class: permanent, reason: "rejected", match: answered(func(a *answer) bool { return a.status/100 == 4 })},
	{row: "other status", class: transient, match: answered(func(*answer) bool { return true })},
	{row: "token endpoint refuses the credentials", class: misconfigured, match: func(x *exchange) bool {
		re := retrieveError(x)
		return re != nil && refusal(re.Response.StatusCode)
	}},
	{row: "token endpoint fails otherwise", class: transient, match: func(x *exchange) bool {
		var te *tokenError
		return errors.As(x.err, &te)
	}},
	{row: "network error, dropped connection, timeout", class: transient, match: func(x *exchange) bool { return x.err != nil }},
}

func answered(f func(*answer) bool) func(*exchange) bool {
	return func(x *exchange) bool { return x.answer != nil && f(x.answer) }
}

func fcmCode(codes ...string) func(*exchange) bool {
	return answered(func(a *answer) bool { return a.fcmCode != "" && slices.Contains(codes, a.fcmCode) })
}

func status(codes ...int) func(*exchange) bool {
	return answered(func(a *answer) bool { return slices.Contains(codes, a.status) })
}

// invalidArgument reports whether FCM (by its error code) or Google's front end (by the status
// of an answer without an FCM code) refused the request as invalid.
func invalidArgument(a *answer) bool {
	return a.fcmCode == codeInvalidArgument || a.fcmCode == "" && a.gstatus == "INVALID_ARGUMENT"
}

// aboutToken reports whether an INVALID_ARGUMENT answer blames the registration token: a field
// violation on message.token, or, only when FCM names no fields at all, FCM's own sentence for
// a malformed token. Anything vaguer keeps the token: deactivating a good one loses the device.
func aboutToken(a *answer) bool {
	if len(a.fields) > 0 {
		return slices.Contains(a.fields, tokenField)
	}
	return strings.HasPrefix(a.message, invalidTokenMessage)
}

// retrieveError returns the token endpoint's error answer behind x, if that is what x is.
func retrieveError(x *exchange) *oauth2.RetrieveError {
	var te *tokenError
	var re *oauth2.RetrieveError
	if errors.As(x.err, &te) && errors.As(te.err, &re) && re.Response != nil {
		return re
	}
	return nil
}

// refusal reports whether a token endpoint's status refuses the credentials rather than fails.
func refusal(code int) bool {
	return code/100 == 4 && code != http.StatusRequestTimeout && code != http.StatusTooManyRequests
}

// outcome applies the outcome table to x.
func outcome(x exchange, name string, m *workers.Message) (workers.Result, error) {
	for _, r := range outcomeTable {
		if r.match(&x) {
			return r.apply(&x, name, m)
		}
	}
	// The last row matches every exchange that has an answer or an error, and Send makes no
	// other kind.
	panic("fcm: no outcome for an exchange")
}

func (r *rule) apply(x *exchange, name string, m *workers.Message) (workers.Result, error) {
	if r.class == sent {
		if name == "" {
			// The SDK could not read the answer; FCM has the message all the same, and sending it
			// again would deliver it twice.
			var ok struct {
				Name string `json:"name"`
			}
			_ = json.Unmarshal(x.answer.body, &ok)
			name = ok.Name
		}
		return workers.Result{ProviderMessageID: name}, nil
	}

	var err error
	var wait time.Duration
	switch {
	case x.answer != nil:
		err = newAPIError(x.answer, m)
		wait = retryAfter(x.answer.header, time.Now())
	case retrieveError(x) != nil:
		re := retrieveError(x)
		err = fmt.Errorf("access token: the token endpoint answered %s", describeRetrieveError(re))
		wait = retryAfter(re.Response.Header, time.Now())
	case x.ctxErr != nil && !errors.Is(x.err, x.ctxErr):
		// The transport's error may not say that it was the deadline that cut it short.
		err = fmt.Errorf("%w (%v)", x.ctxErr, x.err)
	default:
		err = x.err
	}
	if x.answer == nil && retrieveError(x) == nil {
		var te *tokenError
		if !errors.As(x.err, &te) {
			err = fmt.Errorf("no answer: %w", err)
		}
	}
	err = fmt.Errorf("fcm: send delivery %s: %w", m.DeliveryID, err)

	switch r.class {
	case permanent:
		if r.effect != workers.NoEffect {
			return workers.Result{}, workers.PermanentWithEffect(r.reason, r.effect, time.Time{}, err)
		}
		return workers.Result{}, workers.Permanent(r.reason, err)
	case misconfigured:
		return workers.Result{}, workers.Misconfigured(err)
	default:
		if a := x.answer; a != nil && (a.status == http.StatusTooManyRequests || a.status >= 500) {
			// FCM answered that it did not take the message: another project may be asked.
			return workers.Result{}, workers.Refused(wait, err)
		}
		return workers.Result{}, workers.Transient(wait, err)
	}
}

// APIError is an error answer from FCM.
type APIError struct {
	StatusCode int
	// Status is Google's canonical status, e.g. "NOT_FOUND"; empty when the body had none.
	Status string
	// Code is FCM's error code, e.g. "UNREGISTERED"; empty when FCM gave none.
	Code string
	// Fields are the request fields FCM objected to, e.g. "message.token".
	Fields []string
	// Message is FCM's message, with the token and the content redacted, and shortened.
	Message string
}

func (e *APIError) Error() string {
	s := strconv.Itoa(e.StatusCode) + " "
	if e.Status != "" {
		s += e.Status
	} else {
		s += http.StatusText(e.StatusCode)
	}
	if e.Code != "" && e.Code != e.Status {
		s += " (" + e.Code + ")"
	}
	if len(e.Fields) > 0 {
		s += " on " + strings.Join(e.Fields, ", ")
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// maxFields is how many of FCM's field violations an APIError keeps.
const maxFields = 5

// newAPIError builds the error for an answer. Everything it takes from the body is checked or
// redacted: the body is outside input, and an error ends up in logs and the attempt log.
func newAPIError(a *answer, m *workers.Message) *APIError {
	e := &APIError{
		StatusCode: a.status,
		Status:     enumValue(a.gstatus),
		Code:       enumValue(a.fcmCode),
		Message:    shorten(redact(a.message, m)),
	}
	for i, f := range a.fields {
		if i == maxFields {
			e.Fields = append(e.Fields, fmt.Sprintf("and %d more", len(a.fields)-i))
			break
		}
		e.Fields = append(e.Fields, shorten(redact(f, m)))
	}
	return e
}

// enumValue returns s if it looks like one of Google's enum values (UPPER_SNAKE_CASE), else "".
func enumValue(s string) string {
	if s == "" || len(s) > 64 {
		return ""
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 'A' || c > 'Z') && c != '_' && (c < '0' || c > '9' || i == 0) {
			return ""
		}
	}
	return s
}

// minSecretLen is the shortest content string that redact looks for: shorter ones carry next
// to nothing and would match ordinary words of FCM's message.
const minSecretLen = 4

// redact replaces the token and every content string of m in msg: Google's messages quote the
// values they refuse.
func redact(msg string, m *workers.Message) string {
	if msg == "" {
		return ""
	}
	secrets := []string{m.To, m.Content.Title, m.Content.Body}
	if data, err := flatten(m.Content.Data); err == nil {
		for _, v := range data {
			secrets = append(secrets, v)
		}
	}
	// Longest first, so that a string containing another is replaced whole.
	slices.SortFunc(secrets, func(a, b string) int { return len(b) - len(a) })
	for _, s := range secrets {
		if len(s) >= minSecretLen {
			msg = strings.ReplaceAll(msg, s, "[redacted]")
			// Google quotes values in JSON, where some characters are escaped.
			if q, err := json.Marshal(s); err == nil && string(q[1:len(q)-1]) != s {
				msg = strings.ReplaceAll(msg, string(q[1:len(q)-1]), "[redacted]")
			}
		}
	}
	return msg
}

const maxMessageLen = 200

func shorten(s string) string {
	return pgtext.Line(s, maxMessageLen)
}

// describeRetrieveError renders a token endpoint's error answer: the status, and the OAuth2
// error and its description when the body is OAuth2's JSON.
func describeRetrieveError(re *oauth2.RetrieveError) string {
	s := strconv.Itoa(re.Response.StatusCode)
	var body struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if json.Unmarshal(re.Body, &body) == nil && body.Error != "" {
		s += " " + body.Error
		if body.Description != "" {
			s += ": " + shorten(body.Description)
		}
	}
	return s
}

// retryAfter reads the wait that Retry-After asks for, in seconds or as an HTTP date. Zero
// means none was given.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}
