package sim

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
)

// flakyFailures is how many attempts of a "+flaky" delivery fail before one succeeds.
const flakyFailures = 2

// maxFlakyTracked bounds the attempt counts the server keeps for "+flaky" deliveries.
const maxFlakyTracked = 10000

// maxRequestBytes bounds a POST body.
const maxRequestBytes = 1 << 20

// Server is the simulated provider. It is an http.Handler and safe for concurrent use.
type Server struct {
	mux *http.ServeMux

	mu     sync.Mutex
	ring   [Capacity]Message
	next   int // index in ring of the next message
	stored int // how many of ring hold messages
	flaky  map[string]int
}

// NewServer returns an empty simulator.
func NewServer() *Server {
	s := &Server{mux: http.NewServeMux(), flaky: make(map[string]int)}
	s.mux.HandleFunc("POST /v1/messages", s.handleSend)
	s.mux.HandleFunc("GET /v1/messages", s.handleList)
	s.mux.HandleFunc("GET /{$}", s.handlePage)
	// The probes of a simulator run on its own (deploy/k8s/overlays/dev): it depends on nothing,
	// so serving at all means live and ready.
	s.mux.HandleFunc("GET /healthz", serving)
	s.mux.HandleFunc("GET /readyz", serving)
	return s
}

func serving(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ok\n"))
}

// ServeHTTP serves the simulator's API and page.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Messages returns the recorded messages, newest first, optionally only those on channel
// and/or of deliveryID (empty means any).
func (s *Server) Messages(channel delivery.Channel, deliveryID string) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Message, 0, s.stored)
	for i := 1; i <= s.stored; i++ {
		m := s.ring[(s.next-i+Capacity)%Capacity]
		if (channel == "" || m.Channel == channel) && (deliveryID == "" || m.DeliveryID == deliveryID) {
			out = append(out, m)
		}
	}
	return out
}

func (s *Server) handleSend(w http.ResponseWriter, r *http.Request) {
	var req sendRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeJSON(w, http.StatusRequestEntityTooLarge, errorResponse{"message too large"})
			return
		}
		writeJSON(w, http.StatusBadRequest, errorResponse{"invalid JSON: " + err.Error()})
		return
	}
	if _, err := delivery.ParseChannel(string(req.Channel)); err != nil {
		writeJSON(w, http.StatusBadRequest, errorResponse{err.Error()})
		return
	}
	if strings.TrimSpace(req.To) == "" {
		writeJSON(w, http.StatusBadRequest, errorResponse{`"to" is required`})
		return
	}

	// Error texts never repeat the address: the worker records them with the delivery.
	to := strings.ToLower(req.To)
	switch {
	case strings.Contains(to, "+fail") || strings.HasPrefix(to, "fail"):
		writeJSON(w, http.StatusBadRequest, errorResponse{"simulated permanent failure (address asks to fail)"})
		return
	case strings.Contains(to, "+flaky"):
		if n := s.flakyAttempt(req.DeliveryID, to); n <= flakyFailures {
			writeJSON(w, http.StatusServiceUnavailable, errorResponse{
				fmt.Sprintf("simulated outage (address is flaky; attempt %d of %d fails)", n, flakyFailures)})
			return
		}
	}

	m := Message{
		ID:             "sim-" + uuid.Must(uuid.NewV7()).String(),
		DeliveryID:     req.DeliveryID,
		NotificationID: req.NotificationID,
		Channel:        req.Channel,
		To:             req.To,
		Content:        req.Content,
		ReceivedAt:     time.Now().UTC(),
	}
	s.mu.Lock()
	s.ring[s.next] = m
	s.next = (s.next + 1) % Capacity
	s.stored = min(s.stored+1, Capacity)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, sendResponse{ID: m.ID})
}

// flakyAttempt counts an attempt of a "+flaky" delivery and returns its number, from 1.
// Messages without a delivery id count by address.
func (s *Server) flakyAttempt(deliveryID, to string) int {
	key := deliveryID
	if key == "" {
		key = "to:" + to
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.flaky[key]; !ok && len(s.flaky) >= maxFlakyTracked {
		// Forgetting only restarts some flaky deliveries' failures; it cannot lose a message.
		clear(s.flaky)
	}
	s.flaky[key]++
	return s.flaky[key]
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	channel, deliveryID, ok := filters(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Messages []Message `json:"messages"`
	}{s.Messages(channel, deliveryID)})
}

// filters reads ?channel= and ?delivery_id=, answering 400 to an unknown channel.
func filters(w http.ResponseWriter, r *http.Request) (delivery.Channel, string, bool) {
	q := r.URL.Query()
	var channel delivery.Channel
	if c := q.Get("channel"); c != "" {
		var err error
		if channel, err = delivery.ParseChannel(c); err != nil {
			writeJSON(w, http.StatusBadRequest, errorResponse{err.Error()})
			return "", "", false
		}
	}
	return channel, q.Get("delivery_id"), true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// pageRow is one message as the page shows it.
type pageRow struct {
	Time       string
	Channel    delivery.Channel
	To         string
	Heading    string
	Body       string
	HTMLOnly   bool
	DeliveryID string
}

// pageData is what the page template renders.
type pageData struct {
	Rows       []pageRow
	Channels   []delivery.Channel
	Channel    delivery.Channel
	DeliveryID string
	Capacity   int
}

// page is server-side only: no scripts, and html/template escapes every value.
var page = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Herald simulator</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: .4em .6em; border-bottom: 1px solid #ddd; }
th { background: #f4f4f4; }
pre { margin: 0; white-space: pre-wrap; word-break: break-word; font: inherit; }
.muted { color: #777; font-size: 12px; }
form { margin: 1em 0; }
</style>
</head>
<body>
<h1>Herald simulator</h1>
<p class="muted">Messages sent through the simulated providers, newest first (the last {{.Capacity}} are kept).
Addresses with "+fail" or starting with "fail" are rejected; "+flaky" fails twice per delivery, then succeeds.</p>
<form method="get" action="/">
<label>Channel <select name="channel">
<option value="">all</option>
{{- range .Channels}}
<option value="{{.}}"{{if eq . $.Channel}} selected{{end}}>{{.}}</option>
{{- end}}
</select></label>
<label>Delivery id <input name="delivery_id" value="{{.DeliveryID}}" size="38"></label>
<button type="submit">Show</button>
<a href="/">Reset</a>
</form>
{{if .Rows}}
<table>
<thead><tr><th>Time (UTC)</th><th>Channel</th><th>To</th><th>Subject / title</th><th>Body</th></tr></thead>
<tbody>
{{- range .Rows}}
<tr>
<td>{{.Time}}<div class="muted">{{.DeliveryID}}</div></td>
<td>{{.Channel}}</td>
<td>{{.To}}</td>
<td>{{.Heading}}</td>
<td>{{if .HTMLOnly}}<div class="muted">HTML only, source:</div>{{end}}<pre>{{.Body}}</pre></td>
</tr>
{{- end}}
</tbody>
</table>
{{else}}
<p>No messages yet.</p>
{{end}}
</body>
</html>
`))

// Content-Security-Policy for the page: nothing but its own inline style and form.
const pageCSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// providerChannels are the channels a provider sends: all but the inbox, which the workers store
// themselves and never simulate.
func providerChannels() []delivery.Channel {
	var out []delivery.Channel
	for _, ch := range delivery.Channels {
		if ch != delivery.Inbox {
			out = append(out, ch)
		}
	}
	return out
}

func (s *Server) handlePage(w http.ResponseWriter, r *http.Request) {
	channel, deliveryID, ok := filters(w, r)
	if !ok {
		return
	}
	msgs := s.Messages(channel, deliveryID)
	data := pageData{
		Rows:       make([]pageRow, len(msgs)),
		Channels:   providerChannels(),
		Channel:    channel,
		DeliveryID: deliveryID,
		Capacity:   Capacity,
	}
	for i, m := range msgs {
		row := pageRow{
			Time:       m.ReceivedAt.Format("2006-01-02 15:04:05"),
			Channel:    m.Channel,
			To:         m.To,
			Heading:    cmp.Or(m.Content.Subject, m.Content.Title),
			Body:       cmp.Or(m.Content.Text, m.Content.Body),
			DeliveryID: m.DeliveryID,
		}
		if row.Body == "" && m.Content.HTML != "" {
			row.Body, row.HTMLOnly = m.Content.HTML, true
		}
		data.Rows[i] = row
	}
	var buf bytes.Buffer
	if err := page.Execute(&buf, data); err != nil {
		http.Error(w, "render page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	_, _ = buf.WriteTo(w)
}
