// Package twiliofake is a protocol-faithful stand-in for Twilio's Programmable Messaging API
// (POST /2010-04-01/Accounts/{AccountSid}/Messages.json), for tests that drive the real
// twilio-go SDK over loopback. It checks HTTP basic auth (account SID and auth token, or API key
// SID and secret) and the form the way Twilio does, answers with Twilio's message resource or
// its JSON errors, records what it accepted, and can be told to fail (per number or for the next
// requests), stall or drop connections.
//
// Like Twilio's test credentials, it knows the magic numbers: To +15005550001 is invalid
// (21211), +15005550002 cannot be routed (21612), +15005550003 lacks international permission
// (21408), +15005550004 has replied STOP (21610), +15005550009 cannot receive SMS (21614); From
// +15005550001 is invalid (21212), +15005550007 is not the account's (21606) and +15005550008
// has a full queue (21611).
package twiliofake

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf16"

	"github.com/heraldhq/herald/internal/fakes/faults"
)

// Always, passed as a count to Fail or Drop, makes the misbehaviour permanent until Reset.
const Always = faults.Always

// MaxBodyChars is the longest Body Twilio accepts, in UTF-16 code units: characters outside
// the Basic Multilingual Plane, such as most emoji, count twice.
const MaxBodyChars = 1600

// MaxValidityPeriod is the longest ValidityPeriod Twilio accepts, in seconds (10 hours).
const MaxValidityPeriod = 36000

// maxRequestBytes bounds the form the fake reads; Twilio's own limit is far above any SMS.
const maxRequestBytes = 1 << 20

// Message is one accepted message, as Twilio stored it.
type Message struct {
	SID        string
	AccountSID string
	// AuthUser is the basic-auth user name that created it: the account SID or an API key SID.
	AuthUser            string
	To                  string
	From                string // empty when sent through a messaging service without From
	MessagingServiceSID string
	Body                string
	StatusCallback      string
	ValidityPeriod      int // 0 when not given
	Status              string
	NumSegments         int
	CreatedAt           time.Time
}

// Fake is a Twilio Messages API server. It is safe for concurrent use.
//
// Its Faults script the Messages endpoint, before authentication. Fail(code, n) answers code: a
// Twilio error code (20429, 21211, ...), with its status and message, or an HTTP status: 401,
// 403, 404, 429, 500 and 503 answer Twilio's JSON for them (20003, 20005, 20404, 20429, 20500,
// 20503); 502 and 504 answer an HTML page, as the load balancer in front of Twilio does; any
// other status answers Twilio's JSON with code 0. A 429 carries Retry-After only after
// SetRetryAfter: Twilio does not promise the header. Requests counts the requests that reached
// the endpoint, whatever their answer.
//
// In its Tally's count-only mode, the id given to onAccept is the To number (E.164): Twilio's
// API carries nothing of Herald's, so a load test that needs to tell messages apart sends each
// to its own number. Count and CountTo see only the messages kept.
type Fake struct {
	*faults.Faults[int]
	faults.Tally

	mu         sync.Mutex
	accountSID string
	secrets    map[string]string // basic-auth user (account SID or API key SID) -> secret
	srv        *httptest.Server
	messages   []Message
	numberFail map[string]int // To -> Twilio error code
}

// New returns a fake for the account accountSID (AC + 32 hex digits) that accepts basic auth
// with accountSID and authToken. It does not listen until Start; Handler serves it elsewhere.
func New(accountSID, authToken string) *Fake {
	return &Fake{
		Faults:     faults.New[int](0),
		accountSID: accountSID,
		secrets:    map[string]string{accountSID: authToken},
		numberFail: make(map[string]int),
	}
}

// AddAPIKey lets API key sid (SK + 32 hex digits) with secret authenticate for the account.
func (f *Fake) AddAPIKey(sid, secret string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.secrets[sid] = secret
}

// Start serves the fake on a loopback port and returns its base URL (scheme and host, no path),
// the origin to use in place of https://api.twilio.com. It panics if called twice.
func (f *Fake) Start() (baseURL string) {
	srv := httptest.NewServer(f.Handler())
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.srv != nil {
		srv.Close()
		panic("twiliofake: Start called twice")
	}
	f.srv = srv
	return srv.URL
}

// Close stops the server started by Start, if any, and waits for its requests to finish.
func (f *Fake) Close() {
	f.mu.Lock()
	srv := f.srv
	f.srv = nil
	f.mu.Unlock()
	if srv != nil {
		srv.CloseClientConnections()
		srv.Close()
	}
}

// Handler returns the fake as an http.Handler serving the Messages endpoint; every other path
// answers Twilio's 404.
func (f *Fake) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/2010-04-01/Accounts/{account}/Messages.json",
		faults.Handler(f.Faults, maxRequestBytes, writeScripted, http.HandlerFunc(f.serveMessages)))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, 20404, notFound(r.URL.Path), nil)
	})
	return mux
}

// FailNumber makes every otherwise valid message to the number to fail with the Twilio error
// code (e.g. 21211, 21610), as Twilio answers for that number. Code 0 clears it. It takes
// precedence over the magic numbers.
func (f *Fake) FailNumber(to string, code int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if code == 0 {
		delete(f.numberFail, to)
		return
	}
	f.numberFail[to] = code
}

// Reset clears every misbehaviour and everything recorded; credentials stay.
func (f *Fake) Reset() {
	f.Faults.Reset()
	f.Tally.Reset()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.messages = nil
	f.numberFail = make(map[string]int)
}

// Messages returns a copy of the accepted messages, oldest first.
func (f *Fake) Messages() []Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Message(nil), f.messages...)
}

// Count returns how many accepted messages went to the number to with exactly body.
func (f *Fake) Count(to, body string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, m := range f.messages {
		if m.To == to && m.Body == body {
			n++
		}
	}
	return n
}

// CountTo returns how many accepted messages went to the number to.
func (f *Fake) CountTo(to string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, m := range f.messages {
		if m.To == to {
			n++
		}
	}
	return n
}

// serveMessages handles a request that its Faults let through.
func (f *Fake) serveMessages(w http.ResponseWriter, r *http.Request) {
	raw, readErr := io.ReadAll(r.Body)
	user, ok := f.authenticate(r)
	if !ok {
		writeError(w, 20003, "Authenticate", nil)
		return
	}
	if r.PathValue("account") != f.accountSID {
		// The credentials are good, but not for the account in the path.
		writeError(w, 20003, "Authenticate", nil)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeErrorStatus(w, http.StatusMethodNotAllowed, 20004, "Method not allowed", nil)
		return
	}
	if readErr != nil {
		var tooBig *http.MaxBytesError
		if errors.As(readErr, &tooBig) {
			writeErrorStatus(w, http.StatusRequestEntityTooLarge, 20413, "Request Entity Too Large", nil)
			return
		}
		writeErrorStatus(w, http.StatusBadRequest, 20001, "Bad Request", nil)
		return
	}
	// Twilio reads parameters only from a form body; anything else looks like a request without
	// parameters.
	form := url.Values{}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err == nil && mt == "application/x-www-form-urlencoded" {
		form, err = url.ParseQuery(string(raw))
		if err != nil {
			writeErrorStatus(w, http.StatusBadRequest, 20001, "Bad Request", nil)
			return
		}
	}

	req := messageRequest{
		to:             form.Get("To"),
		from:           form.Get("From"),
		service:        form.Get("MessagingServiceSid"),
		body:           form.Get("Body"),
		statusCallback: form.Get("StatusCallback"),
		validity:       form.Get("ValidityPeriod"),
		hasMedia:       form.Get("MediaUrl") != "" || form.Get("ContentSid") != "",
	}
	code, validity := req.validate()
	if code == 0 {
		code = f.numberFailure(req.to, req.from)
	}
	if code != 0 {
		writeError(w, code, errorMessage(code, req.to, req.from, req.service, req.statusCallback), nil)
		return
	}

	m := Message{
		SID:                 newSID("SM"),
		AccountSID:          f.accountSID,
		AuthUser:            user,
		To:                  req.to,
		From:                req.from,
		MessagingServiceSID: req.service,
		Body:                req.body,
		StatusCallback:      req.statusCallback,
		ValidityPeriod:      validity,
		Status:              "queued",
		NumSegments:         segments(req.body),
		CreatedAt:           time.Now().UTC(),
	}
	if m.From == "" {
		// Through a messaging service, Twilio picks the sender later: the message starts
		// "accepted" with no From.
		m.Status = "accepted"
	}
	if keep, report := f.Accept(1); keep {
		f.mu.Lock()
		f.messages = append(f.messages, m)
		f.mu.Unlock()
	} else if report != nil {
		report(m.To, time.Now())
	}

	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(resource(m))
}

// authenticate checks HTTP basic auth against the account's token and API keys.
func (f *Fake) authenticate(r *http.Request) (user string, ok bool) {
	user, pass, ok := r.BasicAuth()
	if !ok || user == "" {
		return "", false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	secret, known := f.secrets[user]
	return user, known && secret == pass
}

// magicTo and magicFrom are the numbers Twilio's test credentials answer with an error.
var (
	magicTo = map[string]int{
		"+15005550001": 21211,
		"+15005550002": 21612,
		"+15005550003": 21408,
		"+15005550004": 21610,
		"+15005550009": 21614,
	}
	magicFrom = map[string]int{
		"+15005550001": 21212,
		"+15005550007": 21606,
		"+15005550008": 21611,
	}
)

func (f *Fake) numberFailure(to, from string) int {
	f.mu.Lock()
	code, ok := f.numberFail[to]
	f.mu.Unlock()
	if ok {
		return code
	}
	if code, ok := magicTo[to]; ok {
		return code
	}
	return magicFrom[from]
}

type messageRequest struct {
	to, from, service, body, statusCallback, validity string
	hasMedia                                          bool
}

var (
	e164       = regexp.MustCompile(`^\+[1-9][0-9]{1,14}$`)
	alphaID    = regexp.MustCompile(`^[A-Za-z0-9 ]*[A-Za-z][A-Za-z0-9 ]*$`)
	shortCode  = regexp.MustCompile(`^[0-9]{3,8}$`)
	serviceSID = regexp.MustCompile(`^MG[0-9a-fA-F]{32}$`)
)

// validate checks the form in the order Twilio does and returns the first error code, or the
// validity period in seconds (0 when not given).
func (q *messageRequest) validate() (code, validity int) {
	switch {
	case q.to == "":
		return 21604, 0
	case q.from == "" && q.service == "":
		return 21603, 0
	case q.body == "" && !q.hasMedia:
		return 21602, 0
	case !e164.MatchString(q.to):
		return 21211, 0
	case q.from != "" && !validFrom(q.from):
		return 21212, 0
	case q.service != "" && !serviceSID.MatchString(q.service):
		return 21705, 0
	case q.statusCallback != "" && !absoluteHTTPURL(q.statusCallback):
		return 21609, 0
	case len(utf16.Encode([]rune(q.body))) > MaxBodyChars:
		return 21617, 0
	}
	if q.validity != "" {
		v, err := strconv.Atoi(q.validity)
		if err != nil || v < 1 || v > MaxValidityPeriod {
			return 21624, 0
		}
		validity = v
	}
	return 0, validity
}

// validFrom accepts what Twilio sends from: an E.164 number, a short code, or an alphanumeric
// sender ID of up to 11 characters with at least one letter.
func validFrom(s string) bool {
	return e164.MatchString(s) || shortCode.MatchString(s) || (len(s) <= 11 && alphaID.MatchString(s))
}

func absoluteHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// statusOf is the HTTP status of Twilio's error codes that are not 400.
var statusOf = map[int]int{
	20003: http.StatusUnauthorized,
	20004: http.StatusMethodNotAllowed,
	20005: http.StatusForbidden,
	20404: http.StatusNotFound,
	20429: http.StatusTooManyRequests,
	20500: http.StatusInternalServerError,
	20503: http.StatusServiceUnavailable,
}

// errorMessage is Twilio's message for code. Like Twilio's, several quote the numbers.
func errorMessage(code int, to, from, service, callback string) string {
	switch code {
	case 20003:
		return "Authenticate"
	case 20005:
		return "Account not active"
	case 20429:
		return "Too Many Requests"
	case 20500:
		return "Internal Server Error"
	case 20503:
		return "Service Unavailable"
	case 21211:
		return fmt.Sprintf("The 'To' number %s is not a valid phone number.", to)
	case 21212:
		return fmt.Sprintf("The 'From' number %s is not a valid phone number, shortcode, or alphanumeric sender ID.", from)
	case 21408:
		return fmt.Sprintf("Permission to send an SMS has not been enabled for the region indicated by the 'To' number: %s.", to)
	case 21602:
		return "Message body is required."
	case 21603:
		return "A 'From' phone number is required."
	case 21604:
		return "A 'To' phone number is required."
	case 21606:
		return fmt.Sprintf("The From phone number %s is not a valid, SMS-capable inbound phone number or short code for your account.", from)
	case 21609:
		return fmt.Sprintf("The StatusCallback URL %s is not a valid URL.", callback)
	case 21610:
		return "Attempt to send to unsubscribed recipient"
	case 21611:
		return "This 'From' number has exceeded the maximum number of queued messages"
	case 21612:
		return fmt.Sprintf("The 'To' phone number: %s, is not currently reachable using the 'From' phone number: %s via SMS.", to, from)
	case 21614:
		return fmt.Sprintf("'To' number %s is not a valid mobile number", to)
	case 21617:
		return "The concatenated message body exceeds the 1600 character limit."
	case 21624:
		return "Invalid validity period value"
	case 21701:
		return fmt.Sprintf("The Messaging Service %s does not exist", service)
	case 21705:
		return fmt.Sprintf("The Messaging Service Sid %s is invalid.", service)
	}
	return "Error " + strconv.Itoa(code)
}

// writeScripted answers a failure the test asked for.
func writeScripted(w http.ResponseWriter, r *http.Request, a faults.Action[int]) {
	code := a.Fail
	switch code {
	case http.StatusBadGateway, http.StatusGatewayTimeout:
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(code)
		fmt.Fprintf(w, "<html><body><h1>%d %s</h1></body></html>\n", code, http.StatusText(code))
		return
	case http.StatusTooManyRequests:
		code = 20429
	case http.StatusInternalServerError:
		code = 20500
	case http.StatusServiceUnavailable:
		code = 20503
	case http.StatusUnauthorized:
		code = 20003
	case http.StatusForbidden:
		code = 20005
	case http.StatusNotFound:
		code = 20404
	}
	if code < 1000 {
		writeErrorStatus(w, code, 0, http.StatusText(code), nil)
		return
	}
	var h http.Header
	if code == 20429 && a.RetryAfter > 0 {
		h = http.Header{"Retry-After": {strconv.FormatInt(faults.Seconds(a.RetryAfter), 10)}}
	}
	// Quote the request's numbers, as Twilio's messages for these codes do.
	raw, _ := io.ReadAll(r.Body)
	form, _ := url.ParseQuery(string(raw))
	msg := errorMessage(code, form.Get("To"), form.Get("From"), form.Get("MessagingServiceSid"), form.Get("StatusCallback"))
	if code == 20404 {
		msg = notFound(r.URL.Path)
	}
	writeError(w, code, msg, h)
}

func notFound(path string) string {
	return fmt.Sprintf("The requested resource %s was not found", path)
}

// writeError writes Twilio's JSON error for code with the code's HTTP status (400 for the
// 21xxx validation codes).
func writeError(w http.ResponseWriter, code int, msg string, h http.Header) {
	status, ok := statusOf[code]
	if !ok {
		status = http.StatusBadRequest
	}
	writeErrorStatus(w, status, code, msg, h)
}

func writeErrorStatus(w http.ResponseWriter, status, code int, msg string, h http.Header) {
	for k, v := range h {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	body := struct {
		Code     int    `json:"code"`
		Message  string `json:"message"`
		MoreInfo string `json:"more_info"`
		Status   int    `json:"status"`
	}{code, msg, fmt.Sprintf("https://www.twilio.com/docs/errors/%d", code), status}
	_ = json.NewEncoder(w).Encode(body)
}

// resource is the JSON message resource Twilio answers on creation.
func resource(m Message) map[string]any {
	uri := fmt.Sprintf("/2010-04-01/Accounts/%s/Messages/%s", m.AccountSID, m.SID)
	created := m.CreatedAt.Format(time.RFC1123Z)
	var from, service any
	if m.From != "" {
		from = m.From
	}
	if m.MessagingServiceSID != "" {
		service = m.MessagingServiceSID
	}
	return map[string]any{
		"account_sid":           m.AccountSID,
		"api_version":           "2010-04-01",
		"body":                  m.Body,
		"date_created":          created,
		"date_sent":             nil,
		"date_updated":          created,
		"direction":             "outbound-api",
		"error_code":            nil,
		"error_message":         nil,
		"from":                  from,
		"messaging_service_sid": service,
		"num_media":             "0",
		"num_segments":          strconv.Itoa(m.NumSegments),
		"price":                 nil,
		"price_unit":            "USD",
		"sid":                   m.SID,
		"status":                m.Status,
		"subresource_uris":      map[string]string{"media": uri + "/Media.json"},
		"to":                    m.To,
		"uri":                   uri + ".json",
	}
}

// newSID returns prefix followed by 32 random lower-case hex digits, the shape of every Twilio
// SID.
func newSID(prefix string) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// gsm7 is the GSM 03.38 default alphabet; gsm7Ext are the characters of its extension table,
// which take two septets.
const (
	gsm7    = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
	gsm7Ext = "\f^{}\\[~]|€"
)

// segments is how many SMS segments body takes: GSM-7 when every character has a septet
// encoding (160 per single message, 153 per part), UCS-2 otherwise (70, or 67 per part).
func segments(body string) int {
	septets := 0
	for _, r := range body {
		switch {
		case strings.ContainsRune(gsm7, r):
			septets++
		case strings.ContainsRune(gsm7Ext, r):
			septets += 2
		default:
			units := len(utf16.Encode([]rune(body)))
			return parts(units, 70, 67)
		}
	}
	return parts(septets, 160, 153)
}

func parts(n, single, multi int) int {
	if n <= single {
		return 1
	}
	return (n + multi - 1) / multi
}
