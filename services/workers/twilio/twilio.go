// Package twilio sends Herald's SMS deliveries through Twilio's Programmable Messaging API,
// using the twilio-go SDK, and maps Twilio's answers onto the workers' error classes.
//
// twilio-go has neither a base-URL option nor a context parameter: it builds every request with
// context.Background(). So each Send builds its own twilio-go client whose HTTP transport
// rewrites the origin (for a fake in tests), attaches the Send's context (its cancellation and
// the configured timeout) to the request, and keeps the HTTP status and Retry-After that the
// SDK would otherwise discard. The connections stay pooled in one shared transport.
package twilio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	twiliosdk "github.com/twilio/twilio-go"
	"github.com/twilio/twilio-go/client"
	openapi "github.com/twilio/twilio-go/rest/api/v2010"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/pgtext"
	"github.com/heraldhq/herald/services/workers"
)

// Defaults for Config.
const (
	DefaultBaseURL = "https://api.twilio.com"
	DefaultTimeout = 10 * time.Second
)

// maxValidityPeriod is the longest ValidityPeriod Twilio accepts (10 hours), and its default.
const maxValidityPeriod = 36000 * time.Second

// maxRetryAfter bounds the wait taken from a 429, so a wild header cannot park a delivery past
// its time to live.
const maxRetryAfter = delivery.DefaultTTL

// maxErrorBody bounds how much of an answer is read (Twilio's are a few kilobytes).
const maxErrorBody = 64 << 10

// Config configures a Sender. AccountSID, credentials (AuthToken, or APIKey and APISecret) and
// a sender (From or MessagingServiceSID) are required.
type Config struct {
	// AccountSID is the account that sends (AC + 32 hex digits).
	AccountSID string
	// AuthToken is the account's auth token. Alternatively, APIKey (SK + 32 hex digits) and
	// APISecret authenticate as an API key of the account. Secrets are sent only as basic auth
	// and never appear in errors.
	AuthToken string
	APIKey    string
	APISecret string
	// From is the sending number (E.164), short code or alphanumeric sender ID; or
	// MessagingServiceSID (MG + 32 hex digits) lets a messaging service pick the sender. Exactly
	// one of them is set.
	From                string
	MessagingServiceSID string
	// StatusCallback is the optional absolute URL Twilio posts delivery status events to.
	StatusCallback string
	// BaseURL is the origin requests go to; DefaultBaseURL when empty (a fake in tests).
	BaseURL string
	// Region and Edge select Twilio's regional processing and edge location (e.g. "ie1",
	// "dublin"); empty means the default US1 region. They replace the SDK's TWILIO_REGION and
	// TWILIO_EDGE environment variables, which the Sender ignores so that only Herald's
	// configuration decides where messages go.
	Region string
	Edge   string
	// Timeout bounds one call, connection to last byte; DefaultTimeout when zero.
	Timeout time.Duration
}

// Sender sends SMS deliveries through Twilio. It is safe for concurrent use.
type Sender struct {
	accountSID     string
	user, secret   string
	from, service  string
	statusCallback string
	region, edge   string
	base           *url.URL // nil: requests keep twilio-go's own origin
	timeout        time.Duration
	transport      *http.Transport
}

var _ workers.Sender = (*Sender)(nil)

var (
	accountSIDPattern = regexp.MustCompile(`^AC[0-9a-fA-F]{32}$`)
	apiKeyPattern     = regexp.MustCompile(`^SK[0-9a-fA-F]{32}$`)
	serviceSIDPattern = regexp.MustCompile(`^MG[0-9a-fA-F]{32}$`)
	alphanumeric      = regexp.MustCompile(`^[A-Za-z0-9]+$`)
	regionPattern     = regexp.MustCompile(`^[a-z0-9-]*$`)
)

// dialControl, when set (by tests), vets every address the Sender connects to.
var dialControl func(network, address string, c syscall.RawConn) error

// New returns a Sender for cfg, or an error naming the first invalid setting (never a secret).
func New(cfg Config) (*Sender, error) {
	if !accountSIDPattern.MatchString(cfg.AccountSID) {
		return nil, fmt.Errorf("twilio: account SID %q is not AC followed by 32 hex digits", cfg.AccountSID)
	}
	user, secret := cfg.AccountSID, cfg.AuthToken
	switch {
	case cfg.APIKey != "" && cfg.AuthToken != "":
		return nil, errors.New("twilio: both an auth token and an API key are set")
	case cfg.APIKey != "":
		if !apiKeyPattern.MatchString(cfg.APIKey) {
			return nil, fmt.Errorf("twilio: API key %q is not SK followed by 32 hex digits", cfg.APIKey)
		}
		user, secret = cfg.APIKey, cfg.APISecret
	case cfg.APISecret != "":
		return nil, errors.New("twilio: an API secret without an API key")
	}
	// twilio-go refuses, at every request, credentials that are not alphanumeric.
	if !alphanumeric.MatchString(secret) {
		return nil, errors.New("twilio: the auth token or API secret is empty or not alphanumeric")
	}
	switch {
	case cfg.From == "" && cfg.MessagingServiceSID == "":
		return nil, errors.New("twilio: neither a from number nor a messaging service")
	case cfg.From != "" && cfg.MessagingServiceSID != "":
		return nil, errors.New("twilio: both a from number and a messaging service")
	case cfg.MessagingServiceSID != "" && !serviceSIDPattern.MatchString(cfg.MessagingServiceSID):
		return nil, fmt.Errorf("twilio: messaging service %q is not MG followed by 32 hex digits", cfg.MessagingServiceSID)
	case strings.ContainsAny(cfg.From, "\r\n"):
		return nil, errors.New("twilio: from contains a line break")
	}
	if cfg.StatusCallback != "" {
		u, err := url.Parse(cfg.StatusCallback)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("twilio: status callback %q is not an absolute http(s) URL", cfg.StatusCallback)
		}
	}
	if !regionPattern.MatchString(cfg.Region) || !regionPattern.MatchString(cfg.Edge) {
		return nil, fmt.Errorf("twilio: region %q or edge %q is not a lower-case name", cfg.Region, cfg.Edge)
	}
	var base *url.URL
	if cfg.BaseURL != "" {
		u, err := url.Parse(cfg.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
			strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("twilio: base URL %q is not an http(s) origin", cfg.BaseURL)
		}
		if cfg.BaseURL != DefaultBaseURL {
			base = u
		}
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("twilio: negative timeout %v", cfg.Timeout)
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}

	transport := &http.Transport{Proxy: http.ProxyFromEnvironment}
	if dt, ok := http.DefaultTransport.(*http.Transport); ok {
		transport = dt.Clone()
	}
	// Workers send many messages in parallel to one host; the default of 2 idle connections per
	// host would make most sends open a new TLS connection.
	transport.MaxIdleConnsPerHost = 64
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: dialControl}
	transport.DialContext = dialer.DialContext

	return &Sender{
		accountSID:     cfg.AccountSID,
		user:           user,
		secret:         secret,
		from:           cfg.From,
		service:        cfg.MessagingServiceSID,
		statusCallback: cfg.StatusCallback,
		region:         cfg.Region,
		edge:           cfg.Edge,
		base:           base,
		timeout:        timeout,
		transport:      transport,
	}, nil
}

// Provider returns "twilio".
func (s *Sender) Provider() string { return "twilio" }

// Close releases the Sender's idle connections.
func (s *Sender) Close() { s.transport.CloseIdleConnections() }

// Send sends m.Content.Body as one SMS to m.To and returns the message SID Twilio assigned. It
// sends nothing Herald-specific: Twilio's status callbacks name the SID.
//
// The outcome of Twilio's answer:
//
//	answer                                            outcome
//	2xx (201 Created)                                 sent; the SID is the provider message id
//	21211 invalid To, 21612 cannot route to it,       *workers.PermanentError "invalid_number",
//	  21614 not a mobile number                         effect workers.InvalidNumber
//	21610 recipient replied STOP                      *workers.PermanentError "opted_out", effect workers.OptOut
//	20429 or HTTP 429                                 *workers.TransientError with Retry-After, if given
//	21611 the From number's queue is full             *workers.TransientError
//	20003 or HTTP 401, 403: credentials refused;      *workers.ConfigError: the channel pauses, the
//	  20005 account not active; 20404 or HTTP 404;      attempt is not counted
//	  21212 invalid From; 21603 From missing;
//	  21701, 21705 messaging service unknown or invalid
//	HTTP 3xx: a redirect (the base URL is wrong)      *workers.ConfigError
//	21617 body over 1600 characters, 21408 region     *workers.PermanentError "rejected"
//	  not enabled, any other 4xx
//	HTTP 408, 5xx (whatever the body)                 *workers.TransientError
//	network error, timeout, canceled context          *workers.TransientError
//	expired before sending (m.ExpiresAt passed)       *workers.PermanentError "expired", nothing sent
//	empty To or Body, a delivery on another channel   *workers.PermanentError, nothing sent
//
// Errors carry Twilio's status, code and message (an *APIError), with phone numbers and the body
// redacted, and never a secret.
func (s *Sender) Send(ctx context.Context, m *workers.Message) (workers.Result, error) {
	if m.Channel != "" && m.Channel != delivery.SMS {
		return workers.Result{}, workers.Permanent("wrong_channel",
			fmt.Errorf("twilio: delivery %s is on channel %q, not sms", m.DeliveryID, m.Channel))
	}
	if m.To == "" {
		return workers.Result{}, workers.Permanent("rejected", fmt.Errorf("twilio: delivery %s has no number", m.DeliveryID))
	}
	if m.Content.Body == "" {
		return workers.Result{}, workers.Permanent("rejected", fmt.Errorf("twilio: delivery %s has no body", m.DeliveryID))
	}
	params := &openapi.CreateMessageParams{}
	params.SetTo(m.To)
	params.SetBody(m.Content.Body)
	if s.from != "" {
		params.SetFrom(s.from)
	} else {
		params.SetMessagingServiceSid(s.service)
	}
	if s.statusCallback != "" {
		params.SetStatusCallback(s.statusCallback)
	}
	if !m.ExpiresAt.IsZero() {
		left := time.Until(m.ExpiresAt)
		if left <= 0 {
			return workers.Result{}, workers.Permanent("expired",
				fmt.Errorf("twilio: delivery %s expired before it was sent", m.DeliveryID))
		}
		// Twilio drops a message still queued after its validity period instead of sending it
		// late. Its default is the maximum, so only a shorter life needs saying.
		if left < maxValidityPeriod {
			params.SetValidityPeriod(int(max((left+time.Second-1)/time.Second, 1)))
		}
	}

	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	rt := &roundTripper{ctx: ctx, base: s.base, next: s.transport}
	msg, err := s.restClient(rt).Api.CreateMessage(params)
	return s.outcome(ctx, m, rt, msg, err)
}

// restClient returns a twilio-go client sending through rt. twilio-go takes no context per call,
// so the client is per call (about 2µs and 3 KB, next to a TLS round trip to Twilio).
func (s *Sender) restClient(rt http.RoundTripper) *twiliosdk.RestClient {
	c := &client.Client{
		Credentials: client.NewCredentials(s.user, s.secret),
		HTTPClient: &http.Client{
			Transport: rt,
			// A redirect from the API is a misconfiguration; following it would turn the POST
			// into a GET, or carry the credentials to another host.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	c.SetAccountSid(s.accountSID)
	rc := twiliosdk.NewRestClientWithParams(twiliosdk.ClientParams{Client: c})
	// Replace what the SDK read from TWILIO_REGION and TWILIO_EDGE.
	rc.SetRegion(s.region)
	rc.SetEdge(s.edge)
	return rc
}

// outcome maps what CreateMessage returned, and what rt saw of the answer, to a Result or an
// error class.
func (s *Sender) outcome(ctx context.Context, m *workers.Message, rt *roundTripper, msg *openapi.ApiV2010Message, err error) (workers.Result, error) {
	if rt.status >= 200 && rt.status < 300 {
		// Twilio accepted the message. An answer that cannot be read (cut off, not JSON) still
		// means it will be sent: sending it again would send it twice.
		res := workers.Result{}
		if err == nil && msg != nil && msg.Sid != nil {
			res.ProviderMessageID = *msg.Sid
		}
		return res, nil
	}
	if rt.status == 0 {
		// No answer at all: the message may or may not have gone; a retry is bounded by the
		// attempt limit, giving up is a loss.
		if err == nil {
			err = errors.New("no answer")
		}
		if ctxErr := context.Cause(ctx); ctxErr != nil && !errors.Is(err, ctxErr) {
			err = fmt.Errorf("%w: %w", ctxErr, redactURLError(err))
		} else {
			err = redactURLError(err)
		}
		return workers.Result{}, workers.Transient(0, fmt.Errorf("twilio: send delivery %s: %w", m.DeliveryID, err))
	}

	apiErr := &APIError{Status: rt.status}
	var re *client.TwilioRestError
	if errors.As(err, &re) {
		apiErr.Code = re.Code
		apiErr.Message = redact(re.Message, m)
	}
	err = fmt.Errorf("twilio: send delivery %s: %w", m.DeliveryID, apiErr)
	switch code, status := apiErr.Code, apiErr.Status; {
	case code == 21211 || code == 21612 || code == 21614:
		return workers.Result{}, workers.PermanentWithEffect("invalid_number", workers.InvalidNumber, time.Time{}, err)
	case code == 21610:
		return workers.Result{}, workers.PermanentWithEffect("opted_out", workers.OptOut, time.Time{}, err)
	case code == 20429 || status == http.StatusTooManyRequests:
		// Twilio answered that it did not take the message: another sender may be asked.
		return workers.Result{}, workers.Refused(retryAfter(rt.retryAfter, time.Now()), err)
	case code == 21611:
		return workers.Result{}, workers.Refused(0, err)
	case configCodes[code], status == http.StatusUnauthorized, status == http.StatusForbidden,
		status == http.StatusNotFound, status >= 300 && status < 400:
		return workers.Result{}, workers.Misconfigured(err)
	case status >= 500:
		return workers.Result{}, workers.Refused(0, err)
	case status == http.StatusRequestTimeout:
		return workers.Result{}, workers.Transient(0, err)
	case status >= 400:
		return workers.Result{}, workers.Permanent("rejected", err)
	default:
		// 1xx, or anything else Twilio does not document: worth another try.
		return workers.Result{}, workers.Transient(0, err)
	}
}

// configCodes are Twilio's answers that blame the account or the sender settings, which every
// message shares.
var configCodes = map[int]bool{
	20003: true, // authentication failed
	20005: true, // account not active
	20404: true, // resource not found: the account SID
	21212: true, // invalid From
	21603: true, // From missing
	21701: true, // messaging service does not exist
	21705: true, // messaging service SID invalid
}

// APIError is an error answer from Twilio.
type APIError struct {
	// Status is the HTTP status.
	Status int
	// Code is Twilio's error code (https://www.twilio.com/docs/errors/<code>); 0 when the answer
	// carried none, e.g. an HTML page from a proxy.
	Code int
	// Message is Twilio's message, with phone numbers and the message body redacted.
	Message string
}

func (e *APIError) Error() string {
	s := fmt.Sprintf("%d %s", e.Status, http.StatusText(e.Status))
	if e.Code != 0 {
		s += fmt.Sprintf(": error %d", e.Code)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// maxMessageLen is the most of Twilio's message an error keeps.
const maxMessageLen = 200

// numberLike matches runs of digits and the separators phone numbers are written with. Twilio
// quotes numbers in several messages ("The 'To' number +15551234567 is not a valid phone
// number.").
var (
	numberLike = regexp.MustCompile(`\+?[0-9][0-9 ().-]*[0-9]`)
	isoDate    = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}$`)
)

// minNumberDigits is the fewest digits redact takes for a phone number: fewer are counts,
// codes and limits ("1600 characters").
const minNumberDigits = 7

// redact removes the recipient's number, anything else that looks like a phone number, and the
// message body from a message of Twilio's.
func redact(msg string, m *workers.Message) string {
	// Invalid bytes become U+FFFD first: dropped only at the end (as the cut below must), they
	// would join the digits on either side into a number that the redaction never saw.
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	if m.To != "" {
		msg = strings.ReplaceAll(msg, m.To, "[number]")
		if digits := strings.TrimPrefix(m.To, "+"); len(digits) >= minNumberDigits {
			msg = strings.ReplaceAll(msg, digits, "[number]")
		}
	}
	if len(m.Content.Body) >= 4 {
		msg = strings.ReplaceAll(msg, m.Content.Body, "[body]")
	}
	var b strings.Builder
	last := 0
	for _, loc := range numberLike.FindAllStringIndex(msg, -1) {
		i, j := loc[0], loc[1]
		run := msg[i:j]
		digits := 0
		for _, c := range run {
			if c >= '0' && c <= '9' {
				digits++
			}
		}
		// Digits inside a word are part of an identifier (a SID), not a number.
		inWord := (i > 0 && isAlnum(msg[i-1])) || (j < len(msg) && isAlnum(msg[j]))
		if digits < minNumberDigits || inWord || isoDate.MatchString(run) {
			continue
		}
		b.WriteString(msg[last:i])
		b.WriteString("[number]")
		last = j
	}
	b.WriteString(msg[last:])
	msg = b.String()
	return pgtext.Line(msg, maxMessageLen)
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// retryAfter reads the wait a 429 asks for, in seconds or as an HTTP date; zero means none.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
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

// redactURLError drops the URL, which names the account, from a transport error.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return fmt.Errorf("timeout: %w", ue.Err)
		}
		return ue.Err
	}
	return err
}

// roundTripper carries one Send's request: it points it at the configured origin, gives it the
// Send's context, and keeps the status and Retry-After of the answer, which twilio-go drops.
// One is used by one goroutine at a time.
type roundTripper struct {
	ctx  context.Context
	base *url.URL
	next http.RoundTripper

	status     int
	retryAfter string
}

func (t *roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(t.ctx)
	if t.base != nil {
		r.URL.Scheme, r.URL.Host, r.Host = t.base.Scheme, t.base.Host, ""
	}
	res, err := t.next.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	t.status, t.retryAfter = res.StatusCode, res.Header.Get("Retry-After")
	if res.StatusCode >= 300 {
		// twilio-go decodes an error answer without closing its body, which would keep the
		// connection out of the pool until the context ends. Read it here, bounded, and hand
		// the SDK a copy.
		body, _ := io.ReadAll(io.LimitReader(res.Body, maxErrorBody))
		_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, maxErrorBody))
		res.Body.Close()
		res.Body = io.NopCloser(bytes.NewReader(body))
		return res, nil
	}
	// twilio-go reads an accepted message's answer with no bound of its own. One too long to
	// read still means an accepted message (see outcome).
	res.Body = http.MaxBytesReader(nil, res.Body, maxErrorBody)
	return res, nil
}
