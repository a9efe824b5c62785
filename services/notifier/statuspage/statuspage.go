// Package statuspage is the notifier's status page for operators: GET /status shows, per
// channel, the queue depth, send and failure rates and dead letters, a chart of the queue depth
// over the last 15 minutes, the dead letters by reason and the workers' provider circuits; GET
// /status/data serves the same ops.Snapshot as JSON.
//
// The page is rendered on the server from the snapshot at request time, so it is complete
// without JavaScript. One small inline script, with no build step and nothing loaded from
// elsewhere, polls /status/data every two seconds and updates the page in place. The
// Content-Security-Policy allows exactly that script and the page's style sheet, by their
// hashes, and no other script, style or connection.
package statuspage

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"html/template"
	"log/slog"
	"net/http"

	"github.com/heraldhq/herald/services/notifier/ops"
)

var (
	//go:embed page.html
	pageHTML string
	//go:embed style.css
	styleSheet string
	//go:embed script.js
	script string
)

var page = template.Must(template.New("page").Parse(pageHTML))

// contentSecurityPolicy allows the page's inline script and style sheet by their hashes (they
// never change, so no per-response nonce is needed), fetches from this origin only, and
// nothing else: no other script or style, no image, no frame around the page, no form.
var contentSecurityPolicy = "default-src 'none'; script-src " + hash(script) + "; style-src " + hash(styleSheet) +
	"; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func hash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}

type handler struct {
	src ops.Source
	log *slog.Logger
}

// New returns the handler of GET /status (the page) and GET /status/data (the snapshot as
// JSON), which reads src on every request. Mount it at the root of a mux, e.g.
// mux.Handle("/status", h) and mux.Handle("/status/", h). A nil log discards the handler's
// failures.
func New(src ops.Source, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &handler{src: src, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", h.page)
	mux.HandleFunc("GET /status/data", h.data)
	return mux
}

// setHeaders sets what every answer carries: the page is live data, so nothing may cache it.
func setHeaders(w http.ResponseWriter, contentType string) {
	hd := w.Header()
	hd.Set("Content-Type", contentType)
	hd.Set("Content-Security-Policy", contentSecurityPolicy)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cache-Control", "no-store")
}

func (h *handler) page(w http.ResponseWriter, r *http.Request) {
	v := newView(h.src.Snapshot())
	// Render to a buffer so that a template failure answers 500, not half a page.
	var buf bytes.Buffer
	if err := page.Execute(&buf, v); err != nil {
		h.log.ErrorContext(r.Context(), "render the status page", "err", err)
		http.Error(w, "the status page failed to render", http.StatusInternalServerError)
		return
	}
	setHeaders(w, "text/html; charset=utf-8")
	if _, err := w.Write(buf.Bytes()); err != nil {
		h.log.DebugContext(r.Context(), "write the status page", "err", err)
	}
}

func (h *handler) data(w http.ResponseWriter, r *http.Request) {
	body, err := json.Marshal(withEmptyLists(h.src.Snapshot()))
	if err != nil {
		h.log.ErrorContext(r.Context(), "encode the status snapshot", "err", err)
		http.Error(w, "the status snapshot failed to encode", http.StatusInternalServerError)
		return
	}
	setHeaders(w, "application/json")
	if _, err := w.Write(body); err != nil {
		h.log.DebugContext(r.Context(), "write the status snapshot", "err", err)
	}
}

// withEmptyLists makes the snapshot's nil lists empty, so that readers of the JSON always find
// arrays, never null.
func withEmptyLists(s ops.Snapshot) ops.Snapshot {
	if s.Latest.Channels == nil {
		s.Latest.Channels = []ops.ChannelSample{}
	}
	if s.History == nil {
		s.History = []ops.Sample{}
	}
	if s.DeadLetters == nil {
		s.DeadLetters = []ops.DeadLetterGroup{}
	}
	if s.Circuits == nil {
		s.Circuits = []ops.Circuit{}
	}
	if s.Engagement == nil {
		s.Engagement = []ops.EngagementRow{}
	}
	return s
}
