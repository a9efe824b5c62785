// Package apns sends Herald's iOS deliveries through Apple's APNs provider API, using the
// sideshow/apns2 SDK over HTTP/2, and maps APNs's answers onto the workers' error classes.
//
// A Sender authenticates with a provider token (a .p8 key: an ES256 JWT that apns2 renews
// once it is 50 minutes old, well inside the hour APNs accepts it) or with a push certificate (PEM or
// PKCS #12). Every delivery is one alert push to one device token: the rendered title and body,
// the default sound, and the delivery's data under the "data" key; the apns-id is the delivery
// id, so APNs's logs and retries name the delivery. A delivery with data but no text is a
// background push instead.
//
// # Outcomes
//
// Each APNs answer maps to one outcome (the outcomes table and byStatus in the code):
//
//	status  reason                                  outcome
//	200     -                                       sent; ProviderMessageID = apns-id (the delivery id)
//	410     Unregistered, ExpiredToken, any 410     permanent "unregistered", DeactivateToken since the 410's timestamp
//	400     BadDeviceToken, MissingDeviceToken      permanent "bad_token" (no effect: often a sandbox token sent to production)
//	400     DeviceTokenNotForTopic                  permanent "token_not_for_topic"
//	400     BadTopic, MissingTopic, TopicDisallowed configuration error (channel pauses, attempt not counted)
//	400     IdleTimeout                             transient
//	400     BadCollapseId, BadExpirationDate,       permanent "rejected"
//	        BadMessageId, BadPriority,
//	        DuplicateHeaders, InvalidPushType,
//	        PayloadEmpty, any other 400
//	403     ExpiredProviderToken                    renew the JWT and resend once in the same Send; then transient
//	403     InvalidProviderToken,                   configuration error
//	        MissingProviderToken, BadCertificate,
//	        BadCertificateEnvironment, Forbidden,
//	        UnrelatedKeyIdInToken, any other 403
//	404     BadPath, any 404                        configuration error
//	405     MethodNotAllowed, any 405               configuration error
//	413     PayloadTooLarge, any 413                permanent "payload_too_large"
//	429     TooManyRequests,                        transient (APNs sends no Retry-After: the backoff decides)
//	        TooManyProviderTokenUpdates
//	5xx     InternalServerError,                    transient
//	        ServiceUnavailable, Shutdown
//	-       network error, timeout, dropped         transient
//	        connection, undecodable answer
//	-       APNs's TLS certificate not trusted,     configuration error
//	        or a TLS alert from APNs (client
//	        certificate expired, revoked, unknown)
//	other   any status not listed                   transient
//
// Before anything is sent: a device token that is not hex is permanent "bad_token", a payload
// over 4096 bytes is permanent "payload_too_large", a delivery with neither text nor data (or
// data JSON cannot encode) is permanent "rejected", and one on another channel is permanent
// "wrong_channel". Errors never contain the device token, the payload or key material.
package apns

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/certificate"
	"github.com/sideshow/apns2/payload"
	"github.com/sideshow/apns2/token"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/services/workers"
)

// APNs's origins.
const (
	HostProduction  = apns2.HostProduction
	HostDevelopment = apns2.HostDevelopment
)

// DefaultTimeout bounds one call to APNs when Config.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// MaxPayload is the largest payload APNs takes for an alert or background push, in bytes.
const MaxPayload = 4096

// DataKey is the payload key under which a delivery's data travels, beside "aps", so that no
// data key can clash with Apple's.
const DataKey = "data"

// minRenewal is the least time between two renewals of the provider token forced by
// ExpiredProviderToken answers. APNs asks providers to renew at most every 20 minutes and
// answers TooManyProviderTokenUpdates to those that do it more often; a clock far off Apple's
// would otherwise have every send renew the token.
const minRenewal = time.Minute

// Config configures a Sender: a Topic and one way of authenticating, a provider token
// (KeyID, TeamID and the .p8 key in KeyFile or KeyPEM) or a certificate (CertFile or CertPEM,
// or P12File or P12).
type Config struct {
	// Topic is the app's bundle id, sent as apns-topic. Required.
	Topic string
	// Host is APNs's origin: HostProduction when empty, HostDevelopment for apps built with
	// the sandbox environment (or a fake in tests).
	Host string

	// KeyFile or KeyPEM hold the .p8 provider key for token authentication; KeyID is its
	// 10-character id and TeamID the developer team's. With CertFile or CertPEM, KeyFile or
	// KeyPEM may instead hold the certificate's private key, when it is not in the same PEM.
	KeyFile string
	KeyPEM  []byte
	KeyID   string
	TeamID  string

	// CertFile or CertPEM hold a push certificate (and usually its key) as PEM; P12File or P12
	// hold it as PKCS #12. Password decrypts an encrypted PEM key or the PKCS #12 file.
	CertFile string
	CertPEM  []byte
	P12File  string
	P12      []byte
	Password string

	// Timeout bounds one call, connection to last byte; DefaultTimeout when zero.
	Timeout time.Duration
	// RootCAs, when set, replaces the system's roots for verifying APNs's certificate (a fake's
	// in tests).
	RootCAs *x509.CertPool

	// dial opens the TCP connections; tests replace it with one that refuses anything but
	// loopback.
	dial dialFunc
}

// Sender sends iOS deliveries through APNs. It is safe for concurrent use; its HTTP/2
// connection is shared by all sends.
type Sender struct {
	client *apns2.Client
	topic  string
	// tok is the provider token, nil with certificate authentication. Its mutex also guards
	// renewed.
	tok     *token.Token
	renewed time.Time // when an ExpiredProviderToken answer last forced a renewal
}

var _ workers.Sender = (*Sender)(nil)

// New returns a Sender for cfg, or an error naming the first invalid setting. It loads the key
// or certificate and, with token authentication, signs a first token, so that a bad key fails
// here rather than on every send (apns2 drops signing errors once running). Errors never
// contain key material.
func New(cfg Config) (*Sender, error) {
	if cfg.Topic == "" || strings.ContainsAny(cfg.Topic, " \t\r\n/") {
		return nil, fmt.Errorf("apns: topic %q is not a bundle id", cfg.Topic)
	}
	host := cfg.Host
	if host == "" {
		host = HostProduction
	}
	host = strings.TrimRight(host, "/")
	u, err := url.Parse(host)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.Path != "" || u.User != nil ||
		u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("apns: host %q is not an https origin", cfg.Host)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("apns: negative timeout %v", cfg.Timeout)
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}

	tlsConf := &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12}
	s := &Sender{topic: cfg.Topic, client: &apns2.Client{Host: host}}
	if cfg.CertFile != "" || cfg.CertPEM != nil || cfg.P12File != "" || cfg.P12 != nil {
		if cfg.KeyID != "" || cfg.TeamID != "" {
			return nil, errors.New("apns: both a certificate and a provider key id or team id are set; choose one way to authenticate")
		}
		cert, err := loadCertificate(cfg)
		if err != nil {
			return nil, err
		}
		tlsConf.Certificates = []tls.Certificate{cert}
		s.client.Certificate = cert
	} else {
		tok, err := newToken(cfg)
		if err != nil {
			return nil, err
		}
		s.tok = tok
		s.client.Token = tok
	}

	dial := cfg.dial
	if dial == nil {
		dial = (&net.Dialer{Timeout: apns2.TLSDialTimeout, KeepAlive: apns2.TCPKeepAlive}).DialContext
	}
	s.client.HTTPClient = httpClient(tlsConf, dial, timeout)
	return s, nil
}

// newToken loads the .p8 key and signs a first token with it.
func newToken(cfg Config) (*token.Token, error) {
	pemBytes, err := oneOf("provider key", cfg.KeyFile, cfg.KeyPEM)
	if err != nil {
		return nil, err
	}
	if pemBytes == nil {
		return nil, errors.New("apns: no credentials: set a provider key (KeyFile or KeyPEM) or a certificate")
	}
	if cfg.KeyID == "" || cfg.TeamID == "" {
		return nil, errors.New("apns: token authentication needs a key id and a team id")
	}
	if strings.ContainsAny(cfg.KeyID+cfg.TeamID, " \t\r\n\"") {
		return nil, errors.New("apns: key id or team id contains white space or quotes")
	}
	key, err := token.AuthKeyFromBytes(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("apns: provider key is not a .p8 ECDSA key: %w", err)
	}
	tok := &token.Token{AuthKey: key, KeyID: cfg.KeyID, TeamID: cfg.TeamID}
	if _, err := tok.Generate(); err != nil {
		return nil, fmt.Errorf("apns: sign a provider token: %w", err)
	}
	return tok, nil
}

// loadCertificate loads the push certificate and its key, and refuses one that has expired.
func loadCertificate(cfg Config) (tls.Certificate, error) {
	p12, err := oneOf("PKCS #12 certificate", cfg.P12File, cfg.P12)
	if err != nil {
		return tls.Certificate{}, err
	}
	certPEM, err := oneOf("certificate", cfg.CertFile, cfg.CertPEM)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := oneOf("certificate key", cfg.KeyFile, cfg.KeyPEM)
	if err != nil {
		return tls.Certificate{}, err
	}
	var cert tls.Certificate
	switch {
	case p12 != nil && (certPEM != nil || keyPEM != nil):
		return tls.Certificate{}, errors.New("apns: both a PKCS #12 and a PEM certificate or key are set")
	case p12 != nil:
		cert, err = certificate.FromP12Bytes(p12, cfg.Password)
	default:
		// apns2 reads the certificate and the key from one PEM stream, in any order.
		cert, err = certificate.FromPemBytes(append(append([]byte(nil), certPEM...), append([]byte("\n"), keyPEM...)...), cfg.Password)
	}
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("apns: load certificate: %w", err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return tls.Certificate{}, fmt.Errorf("apns: parse certificate: %w", err)
		}
	}
	// apns2 pairs whatever certificate and key it finds; a mismatch would only show as failed
	// handshakes.
	signer, ok := cert.PrivateKey.(crypto.Signer)
	pub, okPub := cert.Leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !okPub || !pub.Equal(signer.Public()) {
		return tls.Certificate{}, errors.New("apns: the private key does not belong to the certificate")
	}
	if now := time.Now(); now.After(cert.Leaf.NotAfter) {
		return tls.Certificate{}, fmt.Errorf("apns: certificate %q expired at %s",
			cert.Leaf.Subject.CommonName, cert.Leaf.NotAfter.Format(time.RFC3339))
	}
	return cert, nil
}

// oneOf returns the bytes of the file or the inline value, at most one of which may be set
// (nil when neither is).
func oneOf(what, file string, inline []byte) ([]byte, error) {
	switch {
	case file != "" && inline != nil:
		return nil, fmt.Errorf("apns: both a file and inline bytes are set for the %s", what)
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("apns: read %s: %w", what, err)
		}
		return b, nil
	}
	return inline, nil
}

// Provider returns "apns".
func (s *Sender) Provider() string { return "apns" }

// Send pushes m to its device and returns the apns-id APNs answered (the delivery id). Failures
// are a *workers.PermanentError (with DeactivateToken for 410), a *workers.ConfigError or a
// *workers.TransientError, as the package documentation's table says; an *APIError inside
// carries APNs's status and reason. Errors name the delivery, never the device token or the
// payload.
func (s *Sender) Send(ctx context.Context, m *workers.Message) (workers.Result, error) {
	if m.Channel != "" && m.Channel != delivery.IOS {
		return workers.Result{}, workers.Permanent("wrong_channel",
			fmt.Errorf("apns: delivery %s is on channel %q, not ios", m.DeliveryID, m.Channel))
	}
	if !validToken(m.To) {
		// Checked here, not only by APNs: apns2 pastes the token into the URL unescaped.
		return workers.Result{}, workers.Permanent("bad_token",
			fmt.Errorf("apns: delivery %s: the device token is not a hex string", m.DeliveryID))
	}
	n, err := s.notification(m)
	if err != nil {
		return workers.Result{}, err
	}

	used := s.bearer()
	res, err := s.client.PushWithContext(ctx, n)
	if err == nil && res.StatusCode == http.StatusForbidden && res.Reason == apns2.ReasonExpiredProviderToken &&
		s.renewToken(used) {
		res, err = s.client.PushWithContext(ctx, n)
	}
	if err != nil {
		return workers.Result{}, transportError(m.DeliveryID, err)
	}
	if res.StatusCode == http.StatusOK {
		id := res.ApnsID
		if id == "" {
			id = n.ApnsID
		}
		return workers.Result{ProviderMessageID: id}, nil
	}
	return workers.Result{}, classify(m.DeliveryID, res)
}

// notification builds the push for m.
func (s *Sender) notification(m *workers.Message) (*apns2.Notification, error) {
	p := payload.NewPayload()
	n := &apns2.Notification{
		DeviceToken: m.To,
		Topic:       s.topic,
		PushType:    apns2.PushTypeAlert,
		Priority:    apns2.PriorityHigh,
		Expiration:  m.ExpiresAt,
	}
	switch {
	case m.Content.Title != "" || m.Content.Body != "":
		if m.Content.Title != "" {
			p.AlertTitle(m.Content.Title)
		}
		if m.Content.Body != "" {
			p.AlertBody(m.Content.Body)
		}
		p.Sound("default")
		if m.Priority == delivery.Low {
			n.Priority = apns2.PriorityLow
		}
	case len(m.Content.Data) > 0:
		// Nothing to show: wake the app with its data. Apple requires priority 5 for these.
		p.ContentAvailable()
		n.PushType = apns2.PushTypeBackground
		n.Priority = apns2.PriorityLow
	default:
		return nil, workers.Permanent("rejected",
			fmt.Errorf("apns: delivery %s has no title, body or data", m.DeliveryID))
	}
	if len(m.Content.Data) > 0 {
		p.Custom(DataKey, m.Content.Data)
	}
	body, err := json.Marshal(p)
	if err != nil {
		// Data can hold values JSON cannot encode; resending cannot fix that.
		return nil, workers.Permanent("rejected", fmt.Errorf("apns: encode delivery %s: %w", m.DeliveryID, err))
	}
	if len(body) > MaxPayload {
		return nil, workers.Permanent("payload_too_large",
			fmt.Errorf("apns: delivery %s: payload is %d bytes, APNs takes at most %d", m.DeliveryID, len(body), MaxPayload))
	}
	n.Payload = body
	if m.DeliveryID != uuid.Nil {
		// A canonical UUID, as APNs wants: APNs echoes it, and a resend is recognisable.
		n.ApnsID = m.DeliveryID.String()
	}
	return n, nil
}

// bearer returns the provider token the next push will carry ("" with certificates).
func (s *Sender) bearer() string {
	if s.tok == nil {
		return ""
	}
	return s.tok.GenerateIfExpired()
}

// renewToken replaces the provider token APNs called expired, unless another send already
// did, and reports whether a resend would carry a different token. Renewals this forces are
// at least minRenewal apart.
func (s *Sender) renewToken(used string) bool {
	if s.tok == nil {
		return false
	}
	s.tok.Lock()
	defer s.tok.Unlock()
	if s.tok.Bearer != used {
		return true
	}
	now := time.Now()
	if now.Sub(s.renewed) < minRenewal {
		return false
	}
	if _, err := s.tok.Generate(); err != nil {
		return false
	}
	s.renewed = now
	return true
}

// validToken reports whether t looks like an APNs device token: hex bytes, today 32 of them.
func validToken(t string) bool {
	if t == "" || len(t) > 400 {
		return false
	}
	_, err := hex.DecodeString(t)
	return err == nil
}

// APIError is an APNs answer other than 200.
type APIError struct {
	StatusCode int
	// Reason is APNs's reason, e.g. "Unregistered"; empty when the answer had none.
	Reason string
	// Timestamp is, for 410, when APNs learned that the token is no longer valid.
	Timestamp time.Time
}

func (e *APIError) Error() string {
	s := fmt.Sprintf("%d %s", e.StatusCode, e.Reason)
	if e.Reason == "" {
		s += http.StatusText(e.StatusCode)
	}
	if !e.Timestamp.IsZero() {
		s += " since " + e.Timestamp.UTC().Format(time.RFC3339)
	}
	return s
}

// class is what an answer means for the delivery.
type class int

const (
	transient  class = iota
	permanent        // give up on this delivery
	deactivate       // give up, and the token is gone
	config           // Herald's configuration is at fault: pause the channel
)

// outcome is one row of the table.
type outcome struct {
	status int
	class  class
	reason string // the delivery's reason, for permanent and deactivate
}

// outcomes maps each reason APNs documents to its status and what it means for the delivery.
// It is the table in the package documentation; classify falls back to byStatus for reasons
// APNs adds later, and for a documented reason that comes with another status.
//
// ExpiredProviderToken is transient here because Send has already renewed the token and
// resent once when it gets to classify.
var outcomes = map[string]outcome{
	apns2.ReasonUnregistered: {410, deactivate, "unregistered"},
	apns2.ReasonExpiredToken: {410, deactivate, "unregistered"},

	// BadDeviceToken often means a sandbox token sent to production (or the reverse): the
	// token may be fine in its own environment, so it stays active.
	apns2.ReasonBadDeviceToken:         {400, permanent, "bad_token"},
	apns2.ReasonMissingDeviceToken:     {400, permanent, "bad_token"},
	apns2.ReasonDeviceTokenNotForTopic: {400, permanent, "token_not_for_topic"},
	apns2.ReasonBadTopic:               {400, config, ""},
	apns2.ReasonMissingTopic:           {400, config, ""},
	apns2.ReasonTopicDisallowed:        {400, config, ""},
	apns2.ReasonIdleTimeout:            {400, transient, ""},
	apns2.ReasonBadCollapseID:          {400, permanent, "rejected"},
	apns2.ReasonBadExpirationDate:      {400, permanent, "rejected"},
	apns2.ReasonBadMessageID:           {400, permanent, "rejected"},
	apns2.ReasonBadPriority:            {400, permanent, "rejected"},
	apns2.ReasonDuplicateHeaders:       {400, permanent, "rejected"},
	apns2.ReasonInvalidPushType:        {400, permanent, "rejected"},
	apns2.ReasonPayloadEmpty:           {400, permanent, "rejected"},

	apns2.ReasonExpiredProviderToken:      {403, transient, ""},
	apns2.ReasonInvalidProviderToken:      {403, config, ""},
	apns2.ReasonMissingProviderToken:      {403, config, ""},
	apns2.ReasonBadCertificate:            {403, config, ""},
	apns2.ReasonBadCertificateEnvironment: {403, config, ""},
	apns2.ReasonForbidden:                 {403, config, ""},
	"UnrelatedKeyIdInToken":               {403, config, ""},

	apns2.ReasonBadPath:          {404, config, ""},
	apns2.ReasonMethodNotAllowed: {405, config, ""},

	apns2.ReasonPayloadTooLarge: {413, permanent, "payload_too_large"},

	apns2.ReasonTooManyProviderTokenUpdates: {429, transient, ""},
	apns2.ReasonTooManyRequests:             {429, transient, ""},

	apns2.ReasonInternalServerError: {500, transient, ""},
	apns2.ReasonServiceUnavailable:  {503, transient, ""},
	apns2.ReasonShutdown:            {503, transient, ""},
}

// byStatus is the outcome of an answer whose reason the table does not list.
func byStatus(status int) outcome {
	switch {
	case status == http.StatusGone:
		return outcome{status, deactivate, "unregistered"}
	case status == http.StatusRequestEntityTooLarge:
		return outcome{status, permanent, "payload_too_large"}
	case status == http.StatusBadRequest:
		return outcome{status, permanent, "rejected"}
	case status == http.StatusForbidden, status == http.StatusNotFound, status == http.StatusMethodNotAllowed:
		return outcome{status, config, ""}
	default:
		// 429, 5xx and anything APNs does not document: worth another try, bounded by the
		// attempt limit.
		return outcome{status, transient, ""}
	}
}

// classify maps an APNs answer other than 200 to an error class.
func classify(id uuid.UUID, res *apns2.Response) error {
	apiErr := &APIError{StatusCode: res.StatusCode, Reason: reasonWord(res.Reason)}
	if res.StatusCode == http.StatusGone {
		apiErr.Timestamp = res.Timestamp.Time
	}
	err := fmt.Errorf("apns: send delivery %s: %w", id, apiErr)
	o, ok := outcomes[res.Reason]
	if !ok || o.status != res.StatusCode {
		o = byStatus(res.StatusCode)
	}
	switch o.class {
	case deactivate:
		return workers.PermanentWithEffect(o.reason, workers.DeactivateToken, apiErr.Timestamp, err)
	case permanent:
		return workers.Permanent(o.reason, err)
	case config:
		return workers.Misconfigured(err)
	default:
		// APNs answered (a 429, a 5xx, IdleTimeout): it did not take the message.
		return workers.Refused(0, err)
	}
}

// reasonWord returns APNs's reason if it is one, a short CamelCase word of letters such as
// "Unregistered", and "" for anything else: the reason goes into errors and the attempt log,
// and the answer is outside input. A word that starts with a capital cannot be a device token
// (Herald keeps tokens in lower-case hexadecimal), nor can one without digits be most of one.
func reasonWord(r string) string {
	if len(r) > 64 || r == "" || r[0] < 'A' || r[0] > 'Z' {
		return ""
	}
	for i := 0; i < len(r); i++ {
		if c := r[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return ""
		}
	}
	return r
}

// transportError classifies a push that got no usable answer. The *url.Error apns2 passes on
// names the URL, which holds the device token: only its cause is kept.
func transportError(id uuid.UUID, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			err = fmt.Errorf("timeout: %w", ue.Err)
		} else {
			err = ue.Err
		}
	}
	err = fmt.Errorf("apns: send delivery %s: %w", id, err)
	if tlsRefused(err) {
		return workers.Misconfigured(err)
	}
	return workers.Transient(0, err)
}

// tlsRefused reports whether err is a TLS session that failed over certificates, which the
// next attempt would meet again: APNs's certificate does not verify (a wrong Host or RootCAs,
// or something intercepting TLS), or APNs sent a TLS alert, which it does for a client
// certificate that is expired, revoked or not Apple's. (crypto/tls reports alerts as a
// *net.OpError with Op "remote error"; the alert's own type is unexported.) A server in
// trouble resets the connection or answers 5xx instead.
func tlsRefused(err error) bool {
	var verr *tls.CertificateVerificationError
	var uaErr x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invErr x509.CertificateInvalidError
	if errors.As(err, &verr) || errors.As(err, &uaErr) || errors.As(err, &hostErr) || errors.As(err, &invErr) {
		return true
	}
	var opErr *net.OpError
	return errors.As(err, &opErr) && opErr.Op == "remote error"
}

// Close closes the Sender's idle connections to APNs. Sends after Close open new ones.
func (s *Sender) Close() { s.client.CloseIdleConnections() }
