package fcmfake

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// FCM's limits.
const (
	// MaxPayloadBytes bounds a message's payload: data keys and values plus the notification's
	// title and body.
	MaxPayloadBytes = 4096
	// MaxTTL is the longest ttl FCM keeps a message for.
	MaxTTL = 4 * 7 * 24 * time.Hour
)

// The lengths of what the fake takes for a registration token.
const (
	minTokenLen = 32
	maxTokenLen = 4096
)

var (
	// tokenPattern is what the fake takes for a well-formed registration token. Real tokens are
	// about 150 characters of the URL-safe base64 alphabet with a colon; anything clearly
	// different is refused as FCM refuses it.
	tokenPattern = regexp.MustCompile(`^[A-Za-z0-9_:-]+$`)
	topicPattern = regexp.MustCompile(`^[a-zA-Z0-9-_.~%]{1,900}$`)
	// durationPattern is a protobuf Duration in JSON: seconds with up to nine fraction digits.
	durationPattern = regexp.MustCompile(`^[0-9]{1,12}(\.[0-9]{1,9})?s$`)
)

// sendRequest is the decoded body of one send request.
type sendRequest struct {
	validateOnly bool
	msg          Message
}

// apiError is an error answer found while decoding or validating a request.
type apiError struct {
	code       int
	status     string
	msg        string
	fcmCode    string
	violations []violation
}

func (e *apiError) write(w http.ResponseWriter) {
	var extra []detail
	if len(e.violations) > 0 {
		extra = append(extra, badRequest(e.violations...))
	}
	writeGoogleError(w, e.code, e.status, e.msg, e.fcmCode, extra...)
}

// parseError is how Google's front end answers a body it cannot map onto the request message:
// 400 INVALID_ARGUMENT with a field violation and no FcmError, because the request never
// reached FCM.
func parseError(field, msg string) *apiError {
	e := &apiError{code: http.StatusBadRequest, status: "INVALID_ARGUMENT", msg: msg}
	if field != "" {
		e.violations = []violation{{Field: field, Description: msg}}
	}
	return e
}

// invalid is how FCM itself refuses a message: 400 INVALID_ARGUMENT with the FcmError detail,
// and a field violation when the field is known.
func invalid(field, msg string) *apiError {
	e := &apiError{code: http.StatusBadRequest, status: "INVALID_ARGUMENT", msg: msg, fcmCode: "INVALID_ARGUMENT"}
	if field != "" {
		e.violations = []violation{{Field: field, Description: msg}}
	}
	return e
}

// The request's JSON, level by level. Google's JSON mapping accepts both the proto field names
// and their lowerCamelCase forms; every field FCM documents is listed so that the strict decoder
// refuses misspelt ones.
type (
	requestJSON struct {
		ValidateOnly      *bool           `json:"validate_only"`
		ValidateOnlyCamel *bool           `json:"validateOnly"`
		Message           json.RawMessage `json:"message"`
	}
	messageJSON struct {
		Name            string          `json:"name"`
		Data            json.RawMessage `json:"data"`
		Notification    json.RawMessage `json:"notification"`
		Android         json.RawMessage `json:"android"`
		Webpush         json.RawMessage `json:"webpush"`
		APNS            json.RawMessage `json:"apns"`
		FCMOptions      json.RawMessage `json:"fcm_options"`
		FCMOptionsCamel json.RawMessage `json:"fcmOptions"`
		Token           *string         `json:"token"`
		Topic           *string         `json:"topic"`
		Condition       *string         `json:"condition"`
	}
	notificationJSON struct {
		Title string `json:"title"`
		Body  string `json:"body"`
		Image string `json:"image"`
	}
	androidJSON struct {
		CollapseKey                 string          `json:"collapse_key"`
		CollapseKeyCamel            string          `json:"collapseKey"`
		Priority                    string          `json:"priority"`
		TTL                         *string         `json:"ttl"`
		RestrictedPackageName       string          `json:"restricted_package_name"`
		RestrictedPackageNameCamel  string          `json:"restrictedPackageName"`
		Data                        json.RawMessage `json:"data"`
		Notification                json.RawMessage `json:"notification"`
		FCMOptions                  json.RawMessage `json:"fcm_options"`
		FCMOptionsCamel             json.RawMessage `json:"fcmOptions"`
		DirectBootOK                bool            `json:"direct_boot_ok"`
		DirectBootOKCamel           bool            `json:"directBootOk"`
		BandwidthConstrainedOK      bool            `json:"bandwidth_constrained_ok"`
		BandwidthConstrainedOKCamel bool            `json:"bandwidthConstrainedOk"`
		RestrictedSatelliteOK       bool            `json:"restricted_satellite_ok"`
		RestrictedSatelliteOKCamel  bool            `json:"restrictedSatelliteOk"`
	}
)

// decodeSend decodes and validates a send request body the way FCM does.
func decodeSend(raw []byte) (*sendRequest, *apiError) {
	var rj requestJSON
	if e := decodeStrict(raw, &rj, ""); e != nil {
		return nil, e
	}
	if absent(rj.Message) {
		return nil, invalid("message", "Request contains an invalid argument.")
	}
	var mj messageJSON
	if e := decodeStrict(rj.Message, &mj, "message"); e != nil {
		return nil, e
	}
	req := &sendRequest{
		validateOnly: (rj.ValidateOnly != nil && *rj.ValidateOnly) || (rj.ValidateOnlyCamel != nil && *rj.ValidateOnlyCamel),
	}
	m := &req.msg

	// token, topic and condition are the members of the oneof 'target'.
	var set []string
	for _, t := range []struct {
		name string
		v    *string
	}{{"token", mj.Token}, {"topic", mj.Topic}, {"condition", mj.Condition}} {
		if t.v != nil {
			set = append(set, t.name)
		}
	}
	if len(set) > 1 {
		return nil, parseError("message", fmt.Sprintf(
			"Invalid value at 'message' (oneof), oneof field 'target' is already set. Cannot set '%s'", set[1]))
	}
	if len(set) == 0 {
		return nil, invalid("message", "Recipient of the message is not set.")
	}

	var payload int
	data, e := decodeData(mj.Data, "message.data")
	if e != nil {
		return nil, e
	}
	m.Data = data
	if !absent(mj.Notification) {
		var nj notificationJSON
		if e := decodeStrict(mj.Notification, &nj, "message.notification"); e != nil {
			return nil, e
		}
		m.Notification = &Notification{Title: nj.Title, Body: nj.Body, Image: nj.Image}
		payload += len(nj.Title) + len(nj.Body)
	}
	dataForAndroid := data
	if !absent(mj.Android) {
		a, e := decodeAndroid(mj.Android)
		if e != nil {
			return nil, e
		}
		m.Android = a
		if a.Data != nil {
			dataForAndroid = a.Data // the android block's data replaces the message's
		}
	}
	for k, v := range dataForAndroid {
		payload += len(k) + len(v)
	}

	switch {
	case mj.Token != nil:
		if t := *mj.Token; len(t) < minTokenLen || len(t) > maxTokenLen || !tokenPattern.MatchString(t) {
			const msg = "The registration token is not a valid FCM registration token"
			return nil, invalid("message.token", msg)
		}
		m.Token = *mj.Token
	case mj.Topic != nil:
		t := strings.TrimPrefix(*mj.Topic, "/topics/")
		if !topicPattern.MatchString(t) {
			return nil, invalid("message.topic", "Invalid topic name.")
		}
		m.Topic = t
	default:
		if strings.TrimSpace(*mj.Condition) == "" {
			return nil, invalid("message.condition", "Invalid condition expression provided.")
		}
		m.Condition = *mj.Condition
	}
	if payload > MaxPayloadBytes {
		return nil, invalid("", "Android message is too big")
	}
	return req, nil
}

func decodeAndroid(raw json.RawMessage) (*Android, *apiError) {
	var aj androidJSON
	if e := decodeStrict(raw, &aj, "message.android"); e != nil {
		return nil, e
	}
	a := &Android{
		CollapseKey:           firstNonEmpty(aj.CollapseKey, aj.CollapseKeyCamel),
		Priority:              aj.Priority,
		RestrictedPackageName: firstNonEmpty(aj.RestrictedPackageName, aj.RestrictedPackageNameCamel),
	}
	switch aj.Priority {
	case "", "NORMAL", "HIGH", "normal", "high":
		// Google's JSON parser takes enum values by name; FCM also takes the lower-case forms
		// that its Admin SDKs send.
	default:
		return nil, parseError("message.android.priority", fmt.Sprintf(
			"Invalid value at 'message.android.priority' (type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), %q",
			aj.Priority))
	}
	if aj.TTL != nil {
		ttl, ok := parseDuration(*aj.TTL)
		if !ok {
			return nil, parseError("message.android.ttl", fmt.Sprintf(
				"Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration), %q", *aj.TTL))
		}
		if ttl > MaxTTL {
			return nil, invalid("message.android.ttl", "TTL must not exceed 4 weeks (2419200s).")
		}
		a.TTL = &ttl
	}
	data, e := decodeData(aj.Data, "message.android.data")
	if e != nil {
		return nil, e
	}
	a.Data = data
	return a, nil
}

// decodeData decodes a map<string, string>, in request order so that an error can name the
// entry by index as Google does.
func decodeData(raw json.RawMessage, path string) (map[string]string, *apiError) {
	if absent(raw) {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, parseError(path, fmt.Sprintf("Invalid value at '%s' (type.googleapis.com/google.protobuf.Struct), %s",
			path, truncate(string(raw))))
	}
	data := make(map[string]string)
	for i := 0; dec.More(); i++ {
		tok, err := dec.Token()
		if err != nil {
			return nil, syntaxError()
		}
		key := tok.(string) // object keys are always strings
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, syntaxError()
		}
		var s string
		if v[0] != '"' || json.Unmarshal(v, &s) != nil {
			field := fmt.Sprintf("%s[%d].value", path, i)
			return nil, parseError(field, fmt.Sprintf("Invalid value at '%s' (TYPE_STRING), %s", field, truncate(string(v))))
		}
		if reservedKey(key) {
			return nil, invalid(path, fmt.Sprintf(
				"Invalid data payload key: %q. The keys \"from\", \"message_type\" and keys starting with \"google\" or \"gcm\" are reserved.", key))
		}
		data[key] = s
	}
	return data, nil
}

func reservedKey(k string) bool {
	return k == "from" || k == "message_type" || strings.HasPrefix(k, "google") || strings.HasPrefix(k, "gcm")
}

// parseDuration parses a protobuf Duration's JSON form, e.g. "3600s" or "1.5s".
func parseDuration(s string) (time.Duration, bool) {
	if !durationPattern.MatchString(s) {
		return 0, false
	}
	secs, frac, _ := strings.Cut(strings.TrimSuffix(s, "s"), ".")
	n, err := strconv.ParseInt(secs, 10, 64)
	if err != nil || n > int64(MaxTTL/time.Second)*1000 {
		return 0, false
	}
	d := time.Duration(n) * time.Second
	if frac != "" {
		nanos, _ := strconv.ParseInt((frac + "000000000")[:9], 10, 64)
		d += time.Duration(nanos)
	}
	return d, true
}

// decodeStrict decodes one level of the request into v, refusing unknown fields and trailing
// data with Google's messages; path names the level ("" for the request itself).
func decodeStrict(raw []byte, v any, path string) *apiError {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err, path)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return syntaxError()
	}
	return nil
}

func jsonError(err error, path string) *apiError {
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		name = strings.Trim(name, `"`)
		if path == "" {
			return parseError("", fmt.Sprintf("Invalid JSON payload received. Unknown name %q: Cannot find field.", name))
		}
		return parseError(path, fmt.Sprintf("Invalid JSON payload received. Unknown name %q at '%s': Cannot find field.", name, path))
	}
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		field := typeErr.Field
		if path != "" && field != "" {
			field = path + "." + field
		} else if field == "" {
			field = path
		}
		return parseError(field, fmt.Sprintf("Invalid value at '%s' (%s), %s", field, protoType(typeErr.Type.String()), typeErr.Value))
	}
	return syntaxError()
}

func syntaxError() *apiError {
	return &apiError{code: http.StatusBadRequest, status: "INVALID_ARGUMENT",
		msg: "Invalid JSON payload received. Unexpected token."}
}

func protoType(goType string) string {
	switch goType {
	case "string", "*string":
		return "TYPE_STRING"
	case "bool", "*bool":
		return "TYPE_BOOL"
	}
	return "TYPE_MESSAGE"
}

func absent(raw json.RawMessage) bool {
	return len(raw) == 0 || string(bytes.TrimSpace(raw)) == "null"
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func truncate(s string) string {
	if len(s) > 100 {
		return s[:100] + "..."
	}
	return s
}
