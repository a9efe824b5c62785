// Package sendgrid sends Herald's email deliveries through SendGrid's v3 Mail Send API, using
// the sendgrid-go SDK, and maps SendGrid's answers onto the workers' error classes.
package sendgrid

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	netmail "net/mail"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sendgrid/rest"
	sg "github.com/sendgrid/sendgrid-go"
	"github.com/sendgrid/sendgrid-go/helpers/mail"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/pgtext"
	"github.com/heraldhq/herald/services/workers"
)

// Defaults for Config.
const (
	DefaultBaseURL = "https://api.sendgrid.com"
	DefaultTimeout = 10 * time.Second
)

// sendPath is the Mail Send endpoint, below the base URL.
const sendPath = "/v3/mail/send"

// maxRetryAfter bounds the wait taken from a 429, so a wild header cannot park a delivery
// past its time to live.
const maxRetryAfter = delivery.DefaultTTL

// Config configures a Sender. APIKey and From are required.
type Config struct {
	// APIKey is the SendGrid API key with Mail Send permission. It is sent only as a bearer
	// token and never appears in errors.
	APIKey string
	// BaseURL is SendGrid's API origin; DefaultBaseURL when empty
	// (https://api.eu.sendgrid.com for EU data residency, a fake in tests).
	BaseURL string
	// From is the sender's bare email address; FromName its optional display name.
	From     string
	FromName string
	// ReplyTo is an optional bare address for replies.
	ReplyTo string
	// Categories are SendGrid categories added to every message, for SendGrid's statistics;
	// the delivery's Herald category is added too when SendGrid can take it.
	Categories []string
	// SandboxMode asks SendGrid to validate messages without sending them (it answers 200).
	SandboxMode bool
	// Timeout bounds one call, connection to last byte; DefaultTimeout when zero.
	Timeout time.Duration
}

// Sender sends email deliveries through SendGrid. It is safe for concurrent use.
type Sender struct {
	key      string
	endpoint string
	from     *mail.Email
	replyTo  *mail.Email
	cats     []string
	sandbox  bool
	// client is Herald's own, not sg.DefaultClient: that package-level client has no timeout
	// and is shared with anything else in the process that uses the SDK.
	client *rest.Client
}

var _ workers.Sender = (*Sender)(nil)

// New returns a Sender for cfg, or an error naming the first invalid setting.
func New(cfg Config) (*Sender, error) {
	if cfg.APIKey == "" {
		return nil, errors.New("sendgrid: no API key")
	}
	if strings.ContainsAny(cfg.APIKey, " \r\n") {
		return nil, errors.New("sendgrid: API key contains white space")
	}
	base := cfg.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("sendgrid: base URL %q is not an http(s) origin", base)
	}
	if !bareAddress(cfg.From) {
		return nil, fmt.Errorf("sendgrid: from address %q is not a bare email address", cfg.From)
	}
	if cfg.ReplyTo != "" && !bareAddress(cfg.ReplyTo) {
		return nil, fmt.Errorf("sendgrid: reply-to address %q is not a bare email address", cfg.ReplyTo)
	}
	if len(cfg.Categories) > maxCategories {
		return nil, fmt.Errorf("sendgrid: %d categories, SendGrid takes at most %d", len(cfg.Categories), maxCategories)
	}
	for _, c := range cfg.Categories {
		if !validCategory(c) {
			return nil, fmt.Errorf("sendgrid: category %q is not 1-255 ASCII characters", c)
		}
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("sendgrid: negative timeout %v", cfg.Timeout)
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
	s := &Sender{
		key:      cfg.APIKey,
		endpoint: strings.TrimRight(base, "/") + sendPath,
		from:     mail.NewEmail(cfg.FromName, cfg.From),
		cats:     append([]string(nil), cfg.Categories...),
		sandbox:  cfg.SandboxMode,
		client: &rest.Client{HTTPClient: &http.Client{
			Transport: boundedAnswers{transport},
			Timeout:   timeout,
			// A redirect from an API endpoint is a misconfiguration; following it would turn the
			// POST into a GET, or carry the key to another host.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}},
	}
	if cfg.ReplyTo != "" {
		s.replyTo = mail.NewEmail("", cfg.ReplyTo)
	}
	return s, nil
}

// Provider returns "sendgrid".
func (s *Sender) Provider() string { return "sendgrid" }

// Send sends m as one email. It returns the X-Message-Id SendGrid answered, or a
// *workers.PermanentError (reason "rejected" for a message SendGrid refuses), a
// *workers.ConfigError (a key it refuses) or a *workers.TransientError (rate limits, 5xx, network failures,
// timeouts). Errors carry the status and SendGrid's messages, never the address, the content
// or the key.
func (s *Sender) Send(ctx context.Context, m *workers.Message) (workers.Result, error) {
	if m.Channel != "" && m.Channel != delivery.Email {
		return workers.Result{}, workers.Permanent("wrong_channel",
			fmt.Errorf("sendgrid: delivery %s is on channel %q, not email", m.DeliveryID, m.Channel))
	}
	if m.Content.Subject == "" {
		return workers.Result{}, workers.Permanent("rejected",
			fmt.Errorf("sendgrid: delivery %s has no subject", m.DeliveryID))
	}
	if m.Content.Text == "" && m.Content.HTML == "" {
		return workers.Result{}, workers.Permanent("rejected",
			fmt.Errorf("sendgrid: delivery %s has neither a text nor an HTML body", m.DeliveryID))
	}
	// Marshal here rather than through mail.GetRequestBody, which logs a marshalling error
	// with the standard logger and sends an empty body.
	body, err := json.Marshal(s.mail(m))
	if err != nil {
		return workers.Result{}, workers.Permanent("rejected",
			fmt.Errorf("sendgrid: encode delivery %s: %w", m.DeliveryID, err))
	}

	// A *sg.Client keeps the request body in itself, so it is not safe for concurrent use: one
	// per send. Its SendWithContext always goes through the package-level sg.DefaultClient,
	// so the request it built is sent with s.client instead.
	c := sg.NewSendClient(s.key)
	c.BaseURL = s.endpoint
	c.Body = body
	res, err := s.client.SendWithContext(ctx, c.Request)
	if res == nil {
		// No answer at all: the message may or may not have gone; a retry is bounded by the
		// attempt limit, giving up is a loss.
		return workers.Result{}, workers.Transient(0,
			fmt.Errorf("sendgrid: send delivery %s: %w", m.DeliveryID, redactURLError(err)))
	}
	// With an answer, err can only be a failure to read its body, which SendGrid leaves empty on
	// success: the status decides, so an accepted message is not sent again.
	return classify(res, m)
}

// mail builds the v3 message for m.
func (s *Sender) mail(m *workers.Message) *mail.SGMailV3 {
	v := &mail.SGMailV3{
		From:    s.from,
		ReplyTo: s.replyTo,
		Subject: m.Content.Subject,
		Personalizations: []*mail.Personalization{{
			To: []*mail.Email{mail.NewEmail("", m.To)},
		}},
		// SendGrid wants text/plain first, then text/html.
		Content: make([]*mail.Content, 0, 2),
		// custom_args come back in SendGrid's event webhook, tying events to the delivery.
		CustomArgs: map[string]string{
			"delivery_id":     m.DeliveryID.String(),
			"notification_id": m.NotificationID.String(),
		},
		Categories: append([]string(nil), s.cats...),
	}
	if m.Content.Text != "" {
		v.Content = append(v.Content, mail.NewContent("text/plain", m.Content.Text))
	}
	if m.Content.HTML != "" {
		v.Content = append(v.Content, mail.NewContent("text/html", m.Content.HTML))
	}
	if m.Category != "" && validCategory(m.Category) && len(v.Categories) < maxCategories &&
		!slices.Contains(v.Categories, m.Category) {
		v.Categories = append(v.Categories, m.Category)
	}
	v.Headers = m.ListUnsubscribeHeaders()
	if s.sandbox {
		v.MailSettings = mail.NewMailSettings().SetSandboxMode(mail.NewSetting(true))
	}
	return v
}

// APIError is a non-2xx answer from SendGrid.
type APIError struct {
	StatusCode int
	// Message is SendGrid's error messages, each with the field it names, with anything that
	// looks like an email address redacted.
	Message string
}

func (e *APIError) Error() string {
	s := fmt.Sprintf("%d %s", e.StatusCode, http.StatusText(e.StatusCode))
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// classify maps SendGrid's answer to a Result or an error class.
func classify(res *rest.Response, m *workers.Message) (workers.Result, error) {
	code := res.StatusCode
	if code >= 200 && code < 300 {
		return workers.Result{ProviderMessageID: http.Header(res.Headers).Get("X-Message-Id")}, nil
	}
	apiErr := &APIError{StatusCode: code, Message: errorText(res.Body, m.To)}
	err := fmt.Errorf("sendgrid: send delivery %s: %w", m.DeliveryID, apiErr)
	switch {
	case code == http.StatusUnauthorized, code == http.StatusForbidden:
		// A refused key fails every delivery alike: the channel pauses, no attempt is spent.
		return workers.Result{}, workers.Misconfigured(err)
	case code == http.StatusTooManyRequests:
		// A 429 or a 5xx is an answer that SendGrid did not take the message: another provider
		// may be asked at once.
		return workers.Result{}, workers.Refused(retryAfter(http.Header(res.Headers), time.Now()), err)
	case code == http.StatusRequestTimeout:
		return workers.Result{}, workers.Transient(0, err)
	case code >= 400 && code < 500:
		// 400 and 413 above all: SendGrid refuses this message and will refuse it again.
		return workers.Result{}, workers.Permanent("rejected", err)
	case code >= 500:
		return workers.Result{}, workers.Refused(0, err)
	default:
		// Anything SendGrid does not document (redirects, 1xx): worth another try.
		return workers.Result{}, workers.Transient(0, err)
	}
}

// The most messages, and characters of each, an error keeps from SendGrid's answer.
const (
	maxErrorMessages = 3
	maxMessageLen    = 200
	maxFieldLen      = 64
)

// maxAnswerBytes bounds how much of an answer is read: SendGrid's are empty on success and a
// few hundred bytes of JSON otherwise, and its SDK reads the whole body with no bound of its own.
const maxAnswerBytes = 64 << 10

// boundedAnswers cuts every answer's body at maxAnswerBytes: a longer one fails to read, and
// the status alone decides (see Send).
type boundedAnswers struct{ http.RoundTripper }

func (t boundedAnswers) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := t.RoundTripper.RoundTrip(req)
	if err == nil {
		res.Body = http.MaxBytesReader(nil, res.Body, maxAnswerBytes)
	}
	return res, err
}

var emailLike = regexp.MustCompile(`[^\s"'<>(),;:]+@[^\s"'<>(),;:]+`)

// errorText extracts the messages of SendGrid's error body
// {"errors":[{"message":..,"field":..}]}, redacting the recipient and anything else that looks
// like an address (some of SendGrid's messages quote the address). A body of another shape is
// left out entirely: it may echo anything.
func errorText(body, to string) string {
	var eb struct {
		Errors []struct {
			Message string  `json:"message"`
			Field   *string `json:"field"`
		} `json:"errors"`
	}
	if err := json.Unmarshal([]byte(body), &eb); err != nil {
		return ""
	}
	var parts []string
	for i, e := range eb.Errors {
		if i == maxErrorMessages {
			parts = append(parts, fmt.Sprintf("and %d more", len(eb.Errors)-i))
			break
		}
		msg := e.Message
		if to != "" {
			msg = strings.ReplaceAll(msg, to, "[address]")
		}
		msg = emailLike.ReplaceAllString(msg, "[address]")
		msg = pgtext.Line(msg, maxMessageLen)
		if e.Field != nil && *e.Field != "" {
			msg = "field " + pgtext.Line(emailLike.ReplaceAllString(*e.Field, "[address]"), maxFieldLen) + ": " + msg
		}
		parts = append(parts, msg)
	}
	return strings.Join(parts, "; ")
}

// retryAfter reads the wait a 429 asks for: Retry-After in seconds or as an HTTP date, else
// SendGrid's X-RateLimit-Reset (a Unix time). Zero means none was given.
func retryAfter(h http.Header, now time.Time) time.Duration {
	var d time.Duration
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
			d = secondsDuration(secs)
		} else if t, err := http.ParseTime(v); err == nil {
			d = t.Sub(now)
		}
	} else if v := strings.TrimSpace(h.Get("X-RateLimit-Reset")); v != "" {
		if unix, err := strconv.ParseInt(v, 10, 64); err == nil {
			d = secondsDuration(unix - now.Unix())
		}
	}
	return min(max(d, 0), maxRetryAfter)
}

func secondsDuration(secs int64) time.Duration {
	if secs > int64(maxRetryAfter/time.Second) {
		return maxRetryAfter
	}
	return time.Duration(secs) * time.Second
}

// redactURLError drops the URL from a transport error: the endpoint is configuration, not news,
// and keeping only the cause keeps errors short and free of anything a URL might carry.
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

// maxCategories is SendGrid's limit on categories per message.
const maxCategories = 10

func validCategory(c string) bool {
	if c == "" || len(c) > 255 {
		return false
	}
	for i := 0; i < len(c); i++ {
		if c[i] < 0x20 || c[i] >= 0x7f {
			return false
		}
	}
	return true
}

func bareAddress(s string) bool {
	a, err := netmail.ParseAddress(s)
	return err == nil && a.Name == "" && a.Address == s
}
