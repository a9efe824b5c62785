package fcm

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	firebase "firebase.google.com/go/v4"
	"firebase.google.com/go/v4/messaging"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"golang.org/x/oauth2/jwt"
	"google.golang.org/api/option"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/services/workers"
)

// Defaults for Config.
const (
	DefaultEndpoint = "https://fcm.googleapis.com/v1"
	DefaultTimeout  = 10 * time.Second
)

// Scope is the OAuth2 scope Sender asks for: sending with FCM, nothing else.
const Scope = "https://www.googleapis.com/auth/firebase.messaging"

// DeliveryIDKey is the data key that carries the delivery id to the device, so that the app
// can report what it received.
const DeliveryIDKey = "herald_delivery_id"

// MaxTTL is the longest FCM keeps a message for a device that is offline.
const MaxTTL = 4 * 7 * 24 * time.Hour

// maxRetryAfter bounds the wait taken from Retry-After, so a wild header cannot park a delivery
// past its time to live.
const maxRetryAfter = delivery.DefaultTTL

// Config configures a Sender. ProjectID (unless the key file names it) and exactly one of
// CredentialsFile, CredentialsJSON or the WithTokenSource option are required.
type Config struct {
	// ProjectID is the Firebase project the Android apps are registered in; the key file's
	// project_id when empty.
	ProjectID string
	// CredentialsFile is the path of a service-account JSON key file; CredentialsJSON is the
	// file's content. The key is used only to sign token requests to the file's token_uri and
	// never appears in errors.
	CredentialsFile string
	CredentialsJSON []byte
	// Endpoint is the FCM API base, up to and including the version; DefaultEndpoint when empty
	// (a fake's URL + "/v1" in tests).
	Endpoint string
	// Timeout bounds one Send, token fetch included, and one token fetch; DefaultTimeout when
	// zero. A shorter deadline on Send's context wins.
	Timeout time.Duration
}

// Option changes how New builds a Sender; the options exist for tests and unusual deployments.
type Option func(*options)

type options struct {
	tokens    oauth2.TokenSource
	transport http.RoundTripper
	now       func() time.Time
}

// WithTokenSource makes the Sender authenticate with access tokens from ts instead of
// service-account credentials.
func WithTokenSource(ts oauth2.TokenSource) Option { return func(o *options) { o.tokens = ts } }

// WithTransport makes the Sender send FCM and token requests through rt instead of its own
// clone of http.DefaultTransport.
func WithTransport(rt http.RoundTripper) Option { return func(o *options) { o.transport = rt } }

// WithClock makes the Sender read the time, for ttls, from now.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// Sender sends Android deliveries through FCM. It is safe for concurrent use.
type Sender struct {
	client  *messaging.Client
	tokens  *tokenSource
	timeout time.Duration
	now     func() time.Time
}

var _ workers.Sender = (*Sender)(nil)

// New returns a Sender for cfg, or an error naming the first invalid setting. It reads and
// checks the credentials but makes no request: a key that the token endpoint refuses shows on
// the first Send, as a *workers.ConfigError.
func New(cfg Config, opts ...Option) (*Sender, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("fcm: negative timeout %v", cfg.Timeout)
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	endpoint := cfg.Endpoint
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, errors.New("fcm: endpoint is not a URL")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("fcm: endpoint %q is not an http(s) URL without user info, query or fragment", u.Redacted())
	}
	endpoint = strings.TrimRight(endpoint, "/")

	base := o.transport
	if base == nil {
		t := &http.Transport{Proxy: http.ProxyFromEnvironment, ForceAttemptHTTP2: true}
		if dt, ok := http.DefaultTransport.(*http.Transport); ok {
			t = dt.Clone()
		}
		// Workers send many messages in parallel to one host; over HTTP/1.1 the default of 2
		// idle connections per host would make most sends open a new TLS connection.
		t.MaxIdleConnsPerHost = 64
		base = t
	}

	// Token fetches get their own client: the token source keeps its context for every fetch it
	// ever makes, so only the client's timeout can bound one.
	src, keyProject, err := credentials(cfg, o.tokens, &http.Client{
		Transport:     base,
		Timeout:       timeout,
		CheckRedirect: noRedirects,
	})
	if err != nil {
		return nil, err
	}
	project := cfg.ProjectID
	if project == "" {
		project = keyProject
	}
	if project == "" {
		return nil, errors.New("fcm: no project id")
	}
	if strings.ContainsAny(project, "/?#% \t\r\n") {
		return nil, fmt.Errorf("fcm: project id %q is malformed", project)
	}

	s := &Sender{tokens: newTokenSource(src), timeout: timeout, now: o.now}
	if s.now == nil {
		s.now = time.Now
	}
	hc := &http.Client{
		Transport: &oneShot{next: &authTransport{tokens: s.tokens, next: base}},
		// A redirect from an API endpoint is a misconfiguration; following it would carry the
		// access token to another host.
		CheckRedirect: noRedirects,
	}
	// The SDK's constructors make no requests with an HTTP client of ours: the context only
	// satisfies their signatures.
	ctx := context.Background()
	app, err := firebase.NewApp(ctx, &firebase.Config{ProjectID: project},
		option.WithHTTPClient(hc), option.WithEndpoint(endpoint))
	if err != nil {
		return nil, fmt.Errorf("fcm: %w", err)
	}
	if s.client, err = app.Messaging(ctx); err != nil {
		return nil, fmt.Errorf("fcm: %w", err)
	}
	return s, nil
}

func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// credentials returns where access tokens come from: ts, or the service account of cfg's key
// file, whose token requests go through client. It also returns the key file's project id.
func credentials(cfg Config, ts oauth2.TokenSource, client *http.Client) (oauth2.TokenSource, string, error) {
	creds := cfg.CredentialsJSON
	switch {
	case ts != nil && (cfg.CredentialsFile != "" || len(creds) > 0):
		return nil, "", errors.New("fcm: both credentials and a token source")
	case cfg.CredentialsFile != "" && len(creds) > 0:
		return nil, "", errors.New("fcm: both a credentials file and credentials JSON")
	case ts != nil:
		return ts, "", nil
	case cfg.CredentialsFile != "":
		var err error
		if creds, err = os.ReadFile(cfg.CredentialsFile); err != nil {
			return nil, "", fmt.Errorf("fcm: read credentials: %w", err)
		}
	case len(creds) == 0:
		// Without credentials the SDK would look for Application Default Credentials and probe
		// the cloud metadata server; Herald's credentials are always explicit.
		return nil, "", errors.New("fcm: no credentials")
	}
	conf, project, err := serviceAccount(creds)
	if err != nil {
		return nil, "", fmt.Errorf("fcm: credentials: %w", err)
	}
	// The token source keeps this context for every fetch: it must be one that never ends.
	return &serviceAccountSource{conf: conf, ctx: context.WithValue(context.Background(), oauth2.HTTPClient, client)}, project, nil
}

// serviceAccountSource fetches a new access token on every call. jwt.Config's own token source
// caches its token, which would keep one FCM has refused; Sender's tokenSource does the caching.
type serviceAccountSource struct {
	conf *jwt.Config
	ctx  context.Context
}

func (s *serviceAccountSource) Token() (*oauth2.Token, error) {
	return s.conf.TokenSource(s.ctx).Token()
}

// serviceAccount reads a service-account key file and checks what the token requests will
// need, so that a broken file fails at start-up rather than on the first Send.
func serviceAccount(creds []byte) (conf *jwt.Config, project string, err error) {
	// JWTConfigFromJSON takes only type "service_account": other credential types (external
	// accounts above all) can make the library run commands or fetch arbitrary URLs.
	jc, err := google.JWTConfigFromJSON(creds, Scope)
	if err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, "", errors.New("not JSON")
		}
		return nil, "", errors.New("not a service-account key file")
	}
	if jc.Email == "" {
		return nil, "", errors.New("no client_email")
	}
	if u, err := url.Parse(jc.TokenURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, "", errors.New("token_uri is not an http(s) URL")
	}
	if err := checkPrivateKey(jc.PrivateKey); err != nil {
		return nil, "", err
	}
	var f struct {
		ProjectID string `json:"project_id"`
	}
	_ = json.Unmarshal(creds, &f) // JWTConfigFromJSON parsed it already
	return jc, f.ProjectID, nil
}

// checkPrivateKey checks that key is an RSA key in PEM, PKCS #8 or PKCS #1, as the token
// source will need it. Its errors say nothing of the key.
func checkPrivateKey(key []byte) error {
	block, _ := pem.Decode(key)
	if block == nil {
		return errors.New("private_key is not PEM")
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		if _, ok := k.(*rsa.PrivateKey); !ok {
			return errors.New("private_key is not an RSA key")
		}
		return nil
	}
	if _, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return nil
	}
	return errors.New("private_key is not a PKCS #8 or PKCS #1 RSA key")
}

// Provider returns "fcm".
func (s *Sender) Provider() string { return "fcm" }

// Send sends m as one FCM message, with one request. It returns the message name FCM answered,
// or an error from the outcome table in the package documentation: a *workers.PermanentError
// (with workers.DeactivateToken when the token is dead), a *workers.TransientError carrying any
// Retry-After, or a *workers.ConfigError. An *APIError in the chain holds FCM's answer. Errors
// never contain the token or the content.
func (s *Sender) Send(ctx context.Context, m *workers.Message) (workers.Result, error) {
	if m.Channel != "" && m.Channel != delivery.Android {
		return workers.Result{}, workers.Permanent("wrong_channel",
			fmt.Errorf("fcm: delivery %s is on channel %q, not android", m.DeliveryID, m.Channel))
	}
	if m.To == "" {
		return workers.Result{}, workers.Permanent("bad_token",
			fmt.Errorf("fcm: delivery %s has no registration token", m.DeliveryID))
	}
	msg, err := s.message(m)
	if err != nil {
		return workers.Result{}, workers.Permanent("rejected", fmt.Errorf("fcm: delivery %s: %w", m.DeliveryID, err))
	}

	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	c, callCtx := startCall(ctx)
	defer c.end()
	name, sdkErr := s.client.Send(callCtx, msg)
	x := c.exchange()
	if x.answer == nil && x.err == nil {
		// Nothing went out: the context ended first, or the SDK refused the message itself.
		if err := ctx.Err(); err != nil {
			return workers.Result{}, workers.Transient(0, fmt.Errorf("fcm: send delivery %s: %w", m.DeliveryID, err))
		}
		return workers.Result{}, workers.Permanent("rejected",
			fmt.Errorf("fcm: delivery %s: the SDK refused the message: %v", m.DeliveryID, sdkErr))
	}
	x.ctxErr = ctx.Err()
	if x.answer != nil && x.answer.status == http.StatusUnauthorized && x.answer.fcmCode == "" {
		// FCM refused the access token itself: fetch another for the next Send rather than
		// keep using this one until it expires.
		s.tokens.invalidate()
	}
	return outcome(x, name, m)
}

// message builds the FCM message for m.
func (s *Sender) message(m *workers.Message) (*messaging.Message, error) {
	data, err := flatten(m.Content.Data)
	if err != nil {
		return nil, err
	}
	data[DeliveryIDKey] = m.DeliveryID.String()
	msg := &messaging.Message{
		Token: m.To,
		Data:  data,
		// The SDK wants the lower-case forms, which FCM takes for NORMAL and HIGH.
		Android: &messaging.AndroidConfig{Priority: "normal"},
	}
	if m.Priority == delivery.High {
		msg.Android.Priority = "high"
	}
	if m.Content.Title != "" || m.Content.Body != "" {
		msg.Notification = &messaging.Notification{Title: m.Content.Title, Body: m.Content.Body}
	}
	if !m.ExpiresAt.IsZero() {
		ttl := min(max(m.ExpiresAt.Sub(s.now()), 0), MaxTTL).Truncate(time.Second)
		msg.Android.TTL = &ttl
	}
	return msg, nil
}

// flatten turns rendered data into FCM's map of strings: strings as they are, anything else
// JSON-encoded. It refuses keys FCM reserves.
func flatten(data map[string]any) (map[string]string, error) {
	out := make(map[string]string, len(data)+1)
	for k, v := range data {
		if reservedKey(k) {
			return nil, fmt.Errorf("data key %q is reserved by FCM", k)
		}
		if s, ok := v.(string); ok {
			out[k] = s
			continue
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			return nil, fmt.Errorf("data key %q: cannot encode its value as JSON", k)
		}
		out[k] = strings.TrimSuffix(buf.String(), "\n")
	}
	return out, nil
}

// reservedKey reports whether FCM refuses k as a data key.
func reservedKey(k string) bool {
	return k == "from" || k == "message_type" || strings.HasPrefix(k, "google") || strings.HasPrefix(k, "gcm")
}
