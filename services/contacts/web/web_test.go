package web_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/linktoken"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/pgtest"
	"github.com/heraldhq/herald/internal/preference"
	"github.com/heraldhq/herald/services/contacts"
	"github.com/heraldhq/herald/services/contacts/postgres"
	"github.com/heraldhq/herald/services/contacts/rpc"
	"github.com/heraldhq/herald/services/contacts/web"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

var _ rpc.Links = (*web.Handler)(nil)

const (
	publicURL   = "https://notify.example.com"
	twilioToken = "twilio-test-auth-token"
	// helpText has every character TwiML must escape.
	helpText = `Acme alerts & news <acme.example/help>: reply "STOP" to stop, 'START' to resume.`

	userID = "user-1"
	email  = "ada@example.com"
	phone  = "+14155550123"
)

var (
	linkKey = linktoken.Key{ID: "k1", Secret: bytes.Repeat([]byte{7}, 32)}
	// forgerKey has the real key's id and another secret.
	forgerKey = linktoken.Key{ID: "k1", Secret: bytes.Repeat([]byte{8}, 32)}
)

// notifierMigrations hold notifier.categories, which the contacts store reads.
const notifierMigrations = "../../notifier/postgres/migrations"

func migrate(ctx context.Context, url string) error {
	pool, err := pgdb.Open(ctx, url, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	log := slog.New(slog.DiscardHandler)
	if err := pgdb.Migrate(ctx, pool, "notifier", os.DirFS(notifierMigrations), log); err != nil {
		return err
	}
	return postgres.Migrate(ctx, pool, log)
}

// env is a handler on a fresh database that holds one user, userID, with an email address and
// a phone number. The notifier's migrations seed the categories account, marketing, product
// (default opt-in) and security (critical).
type env struct {
	svc     *contacts.Service
	signer  *linktoken.Signer
	forger  *linktoken.Signer
	handler *web.Handler
	mux     *http.ServeMux
	log     *slog.Logger
	logs    *syncBuffer
	secrets []string // what must never reach the logs
}

func newEnv(t *testing.T, configure ...func(*web.Config)) *env {
	t.Helper()
	return newEnvOn(t, nil, configure...)
}

// newEnvOn is newEnv with the service on wrap(the store), or on the store when wrap is nil.
func newEnvOn(t *testing.T, wrap func(contacts.Store) contacts.Store, configure ...func(*web.Config)) *env {
	t.Helper()
	ctx := ctxT(t)
	pool, err := pgdb.Open(ctx, pgtest.DB(t, "contacts_web", migrate), 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	var store contacts.Store = postgres.New(pool)
	if wrap != nil {
		store = wrap(store)
	}
	e := &env{svc: contacts.New(store, nil), logs: &syncBuffer{}, mux: http.NewServeMux()}
	if e.signer, err = linktoken.New(linkKey); err != nil {
		t.Fatal(err)
	}
	if e.forger, err = linktoken.New(forgerKey); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.UpsertUser(ctx, &contacts.User{ID: userID, Email: email, Phone: phone, Timezone: "Europe/Lisbon"}); err != nil {
		t.Fatal(err)
	}
	e.log = slog.New(slog.NewTextHandler(io.MultiWriter(e.logs, testOutput()), &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := web.Config{PublicURL: publicURL + "/", Signer: e.signer, TwilioAuthToken: twilioToken, SMSHelpText: helpText, Log: e.log}
	for _, f := range configure {
		f(&cfg)
	}
	e.handler = web.New(e.svc, cfg)
	e.handler.Register(e.mux)
	e.secrets = []string{phone, strings.TrimPrefix(phone, "+"), email, outsider}
	t.Cleanup(func() {
		logs := e.logs.String()
		for _, s := range e.secrets {
			if strings.Contains(logs, s) {
				t.Errorf("the logs hold %q:\n%s", s, logs)
			}
		}
	})
	return e
}

func testOutput() io.Writer {
	if testing.Verbose() {
		return os.Stderr
	}
	return io.Discard
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// sign returns a token for c, which the logs must never hold.
func (e *env) sign(c linktoken.Claims) string {
	tok := e.signer.Sign(c)
	e.secrets = append(e.secrets, tok)
	return tok
}

func (e *env) prefToken(user string) string {
	return e.sign(linktoken.Claims{Purpose: linktoken.Preferences, UserID: user, Expires: time.Now().Add(time.Hour).Unix()})
}

// altered returns tok with one character of its payload changed.
func altered(tok string) string {
	b := []byte(tok)
	i := strings.IndexByte(tok, '.') + 3
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

func (e *env) serve(r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	e.mux.ServeHTTP(rec, r)
	return rec
}

func (e *env) get(path string) *httptest.ResponseRecorder {
	return e.serve(httptest.NewRequest(http.MethodGet, path, nil))
}

func (e *env) postForm(path string, form url.Values) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return e.serve(r)
}

// settings returns a user's stored settings as JSON, the form they are stored in.
func (e *env) settings(t *testing.T, user string) string {
	t.Helper()
	st, _, _, err := e.svc.GetSettings(ctxT(t), user)
	if err != nil {
		t.Fatal(err)
	}
	return asJSON(t, st)
}

func asJSON(t *testing.T, st *preference.Settings) string {
	t.Helper()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func (e *env) updateSettings(t *testing.T, user string, st *preference.Settings) {
	t.Helper()
	if _, err := e.svc.UpdateSettings(ctxT(t), user, st, contacts.AnyVersion); err != nil {
		t.Fatal(err)
	}
}

// suppressions returns the suppressions of one address.
func (e *env) suppressions(t *testing.T, ch delivery.Channel, addr string) []preference.Suppression {
	t.Helper()
	found, err := e.svc.Resolve(ctxT(t), nil, []contacts.Target{{Channel: ch, Address: addr}})
	if err != nil {
		t.Fatal(err)
	}
	return found.Suppressions
}

var styleElement = regexp.MustCompile(`(?s)<style>(.*?)</style>`)

// checkPage checks what every HTML answer must be: its status, headers that keep the token in
// the URL from leaking and the page from being framed or cached, and a style sheet the
// Content-Security-Policy allows.
func checkPage(t *testing.T, rec *httptest.ResponseRecorder, status int) string {
	t.Helper()
	body := rec.Body.String()
	if rec.Code != status {
		t.Fatalf("status %d, want %d; body:\n%s", rec.Code, status, body)
	}
	h := rec.Header()
	for name, want := range map[string]string{
		"Content-Type":           "text/html; charset=utf-8",
		"Referrer-Policy":        "no-referrer",
		"Cache-Control":          "no-store",
		"X-Content-Type-Options": "nosniff",
	} {
		if got := h.Get(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	csp := h.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "form-action 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
		}
	}
	m := styleElement.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no <style> in\n%s", body)
	}
	sum := sha256.Sum256([]byte(m[1]))
	if hash := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"; !strings.Contains(csp, "style-src "+hash) {
		t.Errorf("Content-Security-Policy %q does not allow the page's style sheet (%s)", csp, hash)
	}
	if h.Get("Set-Cookie") != "" {
		t.Errorf("Set-Cookie = %q", h.Get("Set-Cookie"))
	}
	for _, want := range []string{`<html lang="en">`, `<meta name="viewport" content="width=device-width, initial-scale=1">`} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	for _, bad := range []string{"<script", " src=", " href="} {
		if strings.Contains(body, bad) {
			t.Errorf("page holds %q: it must load nothing", bad)
		}
	}
	return body
}
