// Package web is the contacts service's pages for end users: the preference page reached by a
// signed, expiring link (/preferences), one-click email unsubscribe per RFC 8058 and RFC 2369
// (/unsubscribe), and Twilio's inbound SMS webhook that handles STOP, START and HELP
// (/webhooks/twilio/inbound). It translates HTTP into calls on contacts.Service and decides
// nothing the domain decides.
//
// The pages are server-rendered HTML with no script and no external asset, so they work in any
// browser, with or without JavaScript. Link tokens travel in URLs and forms; the handlers never
// log them, nor the phone numbers and texts of inbound SMS.
package web

import (
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/twilio/twilio-go/client"

	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/linktoken"
	"github.com/heraldhq/herald/services/contacts"
)

// Config is what the pages need besides the contacts service.
type Config struct {
	// PublicURL is where end users and Twilio reach this service, e.g.
	// https://notify.example.com, with no trailing slash. Links are built on it, and Twilio's
	// signatures are checked against it, since Herald sits behind proxies that change the host
	// and scheme (but not the path) it sees.
	PublicURL string
	// Signer signs and verifies preference and unsubscribe links.
	Signer *linktoken.Signer
	// TwilioAuthToken verifies Twilio's webhook signatures; empty turns the webhook off.
	TwilioAuthToken string
	// SMSHelpText answers an SMS HELP or INFO; empty answers nothing.
	SMSHelpText string
	// Log receives failures; nil discards them.
	Log *slog.Logger
}

// Handler serves the pages.
type Handler struct {
	svc       *contacts.Service
	cfg       Config
	log       *slog.Logger
	validator client.RequestValidator
}

// New returns a Handler for svc.
func New(svc *contacts.Service, cfg Config) *Handler {
	cfg.PublicURL = strings.TrimSuffix(cfg.PublicURL, "/")
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Handler{svc: svc, cfg: cfg, log: log, validator: client.NewRequestValidator(cfg.TwilioAuthToken)}
}

// Register adds the pages' routes to mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /preferences", h.showPreferences)
	mux.HandleFunc("POST /preferences", h.savePreferences)
	mux.HandleFunc("GET /unsubscribe", h.confirmUnsubscribe)
	mux.HandleFunc("POST /unsubscribe", h.unsubscribe)
	mux.HandleFunc("POST /webhooks/twilio/inbound", h.inboundSMS)
}

// PreferenceLink returns a signed link to userID's preference page, valid for ttl, and when it
// expires. It does not check that the user exists. Errors: Invalid (ttl), FailedPrecondition
// (no signer or public URL configured).
func (h *Handler) PreferenceLink(userID string, ttl time.Duration) (string, time.Time, error) {
	if h.cfg.Signer == nil || h.cfg.PublicURL == "" {
		return "", time.Time{}, errs.E(errs.FailedPrecondition, "preference links need a public URL and a link signing key")
	}
	if ttl <= 0 {
		return "", time.Time{}, errs.Field("ttl", "must be positive")
	}
	// Claims carry whole seconds; round down so the link never outlives what was asked.
	expires := time.Unix(time.Now().Add(ttl).Unix(), 0)
	token := h.cfg.Signer.Sign(linktoken.Claims{Purpose: linktoken.Preferences, UserID: userID, Expires: expires.Unix()})
	return h.cfg.PublicURL + "/preferences?token=" + url.QueryEscape(token), expires, nil
}

// maxForm bounds the body of every POST: the preference form is a few kilobytes.
const maxForm = 64 << 10

//go:embed templates/style.css
var styleSheet string

// contentSecurityPolicy allows the page's one inline style sheet, by its hash, and nothing else
// to load: no script, no image, no frame around the page, and forms only to this origin.
var contentSecurityPolicy = func() string {
	sum := sha256.Sum256([]byte(styleSheet))
	return "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) +
		"'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
}()

// setPageHeaders sets the headers every answer carries. The token is in the URL, so no
// Referer may carry it elsewhere, and no cache may keep a page that shows a user's settings.
func setPageHeaders(w http.ResponseWriter) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", contentSecurityPolicy)
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
}

// verify checks a link token for purpose. It answers the request itself, with 400 for a
// missing token and 403 for any other failure, and returns false, when the token is not good.
func (h *Handler) verify(w http.ResponseWriter, token, purpose string) (linktoken.Claims, bool) {
	if token == "" {
		h.message(w, http.StatusBadRequest, msgIncomplete)
		return linktoken.Claims{}, false
	}
	if h.cfg.Signer == nil {
		h.message(w, http.StatusNotFound, msgOff)
		return linktoken.Claims{}, false
	}
	c, err := h.cfg.Signer.Verify(token, purpose, time.Now())
	if err != nil {
		h.refuse(w)
		return linktoken.Claims{}, false
	}
	return c, true
}

// refuse answers a link that does not verify, or that names a user who does not exist, with
// the same page, so that the answer tells a forger nothing.
func (h *Handler) refuse(w http.ResponseWriter) {
	h.message(w, http.StatusForbidden, msgInvalidLink)
}

// unknownUser reports whether err means the token's user is not (or no longer) there, which
// the pages answer like a bad link.
func unknownUser(err error) bool {
	k := errs.KindOf(err)
	return k == errs.NotFound || k == errs.Invalid
}

// fail answers an unexpected failure and logs it. what names the step; it must not hold the
// token, an address or a message body.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, what string, err error) {
	if errs.KindOf(err) == errs.Unavailable {
		h.log.WarnContext(r.Context(), "web: "+what, "path", r.URL.Path, "err", err)
		h.message(w, http.StatusServiceUnavailable, msgUnavailable)
		return
	}
	h.log.ErrorContext(r.Context(), "web: "+what, "path", r.URL.Path, "err", err)
	h.message(w, http.StatusInternalServerError, msgInternal)
}

// categoryTitle turns a category name ("order_updates") into a heading ("Order updates").
func categoryTitle(name string) string {
	s := strings.ReplaceAll(name, "_", " ")
	if s == "" {
		return ""
	}
	r, n := utf8.DecodeRuneInString(s)
	return string(unicode.ToUpper(r)) + s[n:]
}
