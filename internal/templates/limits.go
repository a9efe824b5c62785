package templates

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Limits on what a rendered message may be, checked by Check. The providers' own limits are
// constants; the SMS segment cap is a cost decision, so it is configurable.
const (
	// MaxPushPayload is the largest push payload, in bytes, that both APNs and FCM take.
	MaxPushPayload = 4096
	// MaxSubject is the longest email subject, in characters. RFC 5322 allows 998 bytes on a
	// header line, but folding lifts that for the subject as a whole; 255 is what mail clients
	// and providers reliably show and keep.
	MaxSubject = 255
	// MaxEmailBody is the largest email HTML or text body, in bytes: each is a rendered part,
	// so rendering stops there already.
	MaxEmailBody = MaxOutputSize
	// DefaultSMSSegments is the SMS segment cap when Limits sets none.
	DefaultSMSSegments = 10
)

// The encodings an SMS body is sent in, as SMSSegments names them.
const (
	EncodingGSM7 = "GSM-7" // the GSM 03.38 default alphabet: 160 septets, 153 per concatenated segment
	EncodingUCS2 = "UCS-2" // anything else: 70 UTF-16 code units, 67 per concatenated segment
)

// Limits configures Check. The zero value is the default.
type Limits struct {
	// SMSSegments is the most segments an SMS body may take; 0 means DefaultSMSSegments.
	SMSSegments int
}

func (l Limits) smsSegments() int {
	if l.SMSSegments <= 0 {
		return DefaultSMSSegments
	}
	return l.SMSSegments
}

// Check checks a rendered message against the channels' limits: the push payload that title,
// body and data make (CheckPush) when there is a push title or body, the SMS body's segments
// (CheckSMS), the subject's length (MaxSubject) and that it is one line, and the email bodies'
// sizes (MaxEmailBody). It returns an *Error naming the first part over its limit, or PartData
// for data that alone makes the push payload too large or cannot be encoded. Content that was
// not rendered from a template (a Send's inline content) is held to the same limits through it.
func Check(r Rendered, data map[string]any, l Limits) error {
	if r.PushTitle != "" || r.PushBody != "" {
		if err := CheckPush(unmark(r.PushTitle), unmark(r.PushBody), data); err != nil {
			return err
		}
	}
	if r.SMSBody != "" {
		if err := CheckSMS(unmark(r.SMSBody), l.smsSegments()); err != nil {
			return err
		}
	}
	if n := utf8.RuneCountInString(r.EmailSubject); n > MaxSubject {
		return &Error{Part: PartEmailSubject, Err: fmt.Errorf("renders to %d characters; at most %d are allowed", n, MaxSubject)}
	}
	if err := singleLine(r.EmailSubject); err != nil {
		return &Error{Part: PartEmailSubject, Err: err}
	}
	for _, p := range []struct{ part, text string }{{PartEmailHTML, r.EmailHTML}, {PartEmailText, r.EmailText}} {
		if len(p.text) > MaxEmailBody {
			return &Error{Part: p.part, Err: fmt.Errorf("renders to %d bytes; at most %d are allowed", len(p.text), MaxEmailBody)}
		}
	}
	return nil
}

// CheckSMS returns an *Error for the SMS body when it takes more than maxSegments segments
// (see SMSSegments).
func CheckSMS(body string, maxSegments int) error {
	enc, n := SMSSegments(body)
	if n <= maxSegments {
		return nil
	}
	hint := ""
	if enc == EncodingUCS2 {
		hint = " (a character outside the GSM alphabet, such as an emoji, makes the whole message UCS-2)"
	}
	return &Error{Part: PartSMSBody, Err: fmt.Errorf("renders to %d %s segments%s; at most %d are allowed", n, enc, hint, maxSegments)}
}

// CheckPush returns an *Error when the push notification that title, body and data make is
// larger than MaxPushPayload on APNs or on FCM (see PushPayloadSize). The error names PartData
// when data alone is too large or cannot be encoded as JSON, else the push body (the title
// when there is no body).
func CheckPush(title, body string, data map[string]any) error {
	size, err := PushPayloadSize(title, body, data)
	if err != nil {
		return &Error{Part: PartData, Err: err}
	}
	if size <= MaxPushPayload {
		return nil
	}
	part := PartPushBody
	if body == "" {
		part = PartPushTitle
	}
	if alone, _ := PushPayloadSize("", "", data); alone > MaxPushPayload {
		part = PartData
	}
	return &Error{Part: part, Err: fmt.Errorf("makes a push payload of %d bytes; APNs and FCM take at most %d", size, MaxPushPayload)}
}

// fcmDeliveryIDSize is what the FCM sender adds to every message's data: the delivery id under
// the key "herald_delivery_id", a 36-character UUID.
var fcmDeliveryIDSize = len(`,"herald_delivery_id":"00000000-0000-0000-0000-000000000000"`)

// PushPayloadSize returns the size in bytes of the larger of the two push payloads that title,
// body and data make, as the workers build them:
//
//   - APNs: {"aps":{"alert":{"title":..,"body":..},"sound":"default"},"data":{..}}, or with
//     neither title nor body {"aps":{"content-available":1},"data":{..}};
//   - FCM: {"notification":{"title":..,"body":..},"data":{..}} where data's values are strings
//     (JSON-encoded unless they are strings already) and hold the delivery id besides.
//
// Empty title, body and data are left out, as the workers leave them out. It returns an error
// when data cannot be encoded as JSON.
func PushPayloadSize(title, body string, data map[string]any) (int, error) {
	alert := map[string]string{}
	if title != "" {
		alert["title"] = title
	}
	if body != "" {
		alert["body"] = body
	}
	aps := map[string]any{"content-available": 1}
	if len(alert) > 0 {
		aps = map[string]any{"alert": alert, "sound": "default"}
	}
	apns := map[string]any{"aps": aps}
	if len(data) > 0 {
		apns["data"] = data
	}
	a, err := json.Marshal(apns)
	if err != nil {
		return 0, fmt.Errorf("cannot be encoded as JSON: %w", jsonProblem(err))
	}

	flat := make(map[string]string, len(data))
	for k, v := range data {
		if s, ok := v.(string); ok {
			flat[k] = s
			continue
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			return 0, fmt.Errorf("cannot be encoded as JSON: %w", jsonProblem(err))
		}
		flat[k] = strings.TrimSuffix(buf.String(), "\n")
	}
	fcm := map[string]any{"data": flat}
	if len(alert) > 0 {
		fcm["notification"] = alert
	}
	f, err := json.Marshal(fcm)
	if err != nil {
		return 0, fmt.Errorf("cannot be encoded as JSON: %w", jsonProblem(err))
	}
	fsize := len(f) + fcmDeliveryIDSize
	if len(flat) == 0 {
		fsize-- // no comma before the delivery id
	}
	return max(len(a), fsize), nil
}

// jsonProblem drops the value from a JSON encoding error: data never appears in errors.
func jsonProblem(err error) error {
	var uv *json.UnsupportedValueError
	var ut *json.UnsupportedTypeError
	switch {
	case errors.As(err, &uv):
		return errors.New("unsupported value (NaN or infinity)")
	case errors.As(err, &ut):
		return fmt.Errorf("unsupported type %s", ut.Type)
	}
	return errors.New("unsupported value")
}

// SMSSegments returns how an SMS body is sent: its encoding (EncodingGSM7 when every character
// is in the GSM 03.38 default alphabet or its extension table, else EncodingUCS2) and how many
// segments it takes. A GSM-7 message takes one segment of up to 160 septets, or segments of
// up to 153 when it is longer (the rest of each is the concatenation header); characters of the
// extension table (€ { } [ ] ~ \ ^ | and form feed) take two septets. A UCS-2 message counts
// UTF-16 code units, 70 in one segment or 67 per concatenated segment, so a character outside
// the Basic Multilingual Plane (most emoji) takes two. Like the carriers, SMSSegments never
// splits an escaped character or a surrogate pair between two segments. "" takes 0 segments.
func SMSSegments(body string) (encoding string, segments int) {
	if body == "" {
		return EncodingGSM7, 0
	}
	septets := 0
	for _, r := range body {
		n := gsmSeptets(r)
		if n == 0 {
			return EncodingUCS2, segments16(body)
		}
		septets += n
	}
	if septets <= 160 {
		return EncodingGSM7, 1
	}
	return EncodingGSM7, pack(body, 153, gsmSeptets)
}

func segments16(body string) int {
	units := 0
	for _, r := range body {
		units += utf16Units(r)
	}
	if units <= 70 {
		return 1
	}
	return pack(body, 67, utf16Units)
}

// pack counts the segments of per units that body fills when no character is split.
func pack(body string, per int, units func(rune) int) int {
	segments, used := 1, 0
	for _, r := range body {
		n := units(r)
		if used+n > per {
			segments, used = segments+1, 0
		}
		used += n
	}
	return segments
}

// utf16Units returns how many UTF-16 code units r takes; range over a string yields U+FFFD for
// bytes that are not UTF-8, so every r is valid.
func utf16Units(r rune) int { return max(utf16.RuneLen(r), 1) }

// The GSM 03.38 default alphabet (without the escape character, which no text holds) and the
// characters of its extension table that the default alphabet escapes into.
const (
	gsmBasic     = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
	gsmExtension = "\f^{}\\[~]|€"
)

var gsmCost = func() map[rune]int {
	m := map[rune]int{}
	for _, r := range gsmBasic {
		m[r] = 1
	}
	for _, r := range gsmExtension {
		m[r] = 2
	}
	return m
}()

// gsmSeptets returns how many septets r takes in GSM-7, 0 when GSM-7 cannot carry it.
func gsmSeptets(r rune) int { return gsmCost[r] }
