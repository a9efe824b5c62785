package webhooks_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/internal/delivery"
	deliverypg "github.com/heraldhq/herald/internal/delivery/postgres"
	"github.com/heraldhq/herald/internal/events"
	"github.com/heraldhq/herald/internal/natstest"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/pgtest"
	"github.com/heraldhq/herald/services/notifier"
	"github.com/heraldhq/herald/services/notifier/postgres"
	"github.com/heraldhq/herald/services/notifier/webhooks"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// publicURL is where the providers reach the notifier: behind a proxy that strips /herald.
const publicURL = "https://notify.example.com/herald"

// harness is a Handler on real PostgreSQL and a real JetStream, served over loopback HTTP.
type harness struct {
	t           *testing.T
	store       *postgres.Store
	pool        *pgxpool.Pool
	js          jetstream.JetStream
	srv         *httptest.Server
	sgKey       *ecdsa.PrivateKey
	twilioToken string
	// failPublish makes publishing facts fail, as when JetStream is down.
	failPublish atomic.Bool
}

func migrate(ctx context.Context, url string) error {
	pool, err := pgdb.Open(ctx, url, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := postgres.Migrate(ctx, pool, slog.New(slog.DiscardHandler)); err != nil {
		return err
	}
	return deliverypg.Migrate(ctx, pool, slog.New(slog.DiscardHandler))
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	ctx := t.Context()
	pool, err := pgdb.Open(ctx, pgtest.DB(t, "notifier", migrate), 8)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)

	js := natstest.JetStream(t)
	if err := events.Ensure(ctx, js, 1); err != nil {
		t.Fatal(err)
	}

	deliveries := deliverypg.New(pool)
	t.Cleanup(deliveries.Close)
	h := &harness{t: t, store: postgres.New(pool, deliveries), pool: pool, js: js, twilioToken: "auth-token-" + uuid.NewString()}
	if h.sgKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&h.sgKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	wh, err := webhooks.New(webhooks.Config{
		PublicURL:         publicURL,
		SendGridPublicKey: base64.StdEncoding.EncodeToString(der),
		TwilioAuthToken:   h.twilioToken,
		JS:                js,
		Publish: func(ctx context.Context, subject string, e events.Event) error {
			if h.failPublish.Load() {
				return errors.New("jetstream unavailable")
			}
			return events.Publish(ctx, js, subject, e)
		},
		Store: h.store,
		Log:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/webhooks/", wh)
	h.srv = httptest.NewServer(mux)
	t.Cleanup(h.srv.Close)
	return h
}

// target is a delivery the tests created, with its address.
type target struct {
	ID      uuid.UUID
	Address string
	UserID  string
}

// delivery creates a delivery on ch in state, as a worker leaves it after the provider accepted
// it with message id pmid (for state sent), or while it holds it (sending).
func (h *harness) delivery(ch delivery.Channel, state delivery.State, provider, pmid string) target {
	h.t.Helper()
	now := time.Now()
	n := &notifier.Notification{
		ID: uuid.Must(uuid.NewV7()), AppID: uuid.Must(uuid.NewV7()), Category: "account",
		UserID: "user-" + uuid.NewString()[:8], Priority: delivery.Normal,
		SendAt: now, ExpiresAt: now.Add(time.Hour), CreatedAt: now,
	}
	address := fmt.Sprintf("someone.%s@example.com", uuid.NewString()[:8])
	if ch == delivery.SMS {
		address = fmt.Sprintf("+1555%07d", time.Now().UnixNano()%10_000_000)
	}
	due := now.Add(time.Minute)
	n.Deliveries = []*notifier.Delivery{{
		ID: uuid.Must(uuid.NewV7()), NotificationID: n.ID, UserID: n.UserID, Channel: ch, To: address,
		Category: n.Category, Priority: n.Priority, State: delivery.Queued,
		Content:   delivery.Content{Subject: "Hi", Text: "secret body", Body: "secret body"},
		CreatedAt: now, UpdatedAt: now, DueAt: &due, ExpiresAt: n.ExpiresAt,
	}}
	if _, failed, err := h.store.CreateNotifications(h.t.Context(), []*notifier.Notification{n}); err != nil || failed != nil {
		h.t.Fatal(err, failed)
	}
	d := n.Deliveries[0]
	var err error
	switch state {
	case delivery.Sent, delivery.Delivered, delivery.Failed:
		_, err = h.pool.Exec(h.t.Context(), `UPDATE delivery.deliveries SET state = $2, provider = $3,
			provider_message_id = $4, sent_at = now(), due_at = NULL WHERE id = $1`, d.ID, string(state), provider, pmid)
	case delivery.Sending:
		_, err = h.pool.Exec(h.t.Context(), `UPDATE delivery.deliveries SET state = 'sending',
			lease_owner = 'worker-1', attempts = 1 WHERE id = $1`, d.ID)
	}
	if err != nil {
		h.t.Fatal(err)
	}
	return target{ID: d.ID, Address: address, UserID: n.UserID}
}

// row is what the tests read of a delivery.
type row struct {
	State, Reason, Provider, PMID string
	DueAt                         *time.Time
	LeaseOwner                    *string
	UpdatedAt                     time.Time
}

func (h *harness) row(id uuid.UUID) row {
	h.t.Helper()
	var r row
	err := h.pool.QueryRow(h.t.Context(), `SELECT state, reason, provider, provider_message_id, due_at,
		lease_owner, updated_at FROM delivery.deliveries WHERE id = $1`, id).
		Scan(&r.State, &r.Reason, &r.Provider, &r.PMID, &r.DueAt, &r.LeaseOwner, &r.UpdatedAt)
	if err != nil {
		h.t.Fatal(err)
	}
	return r
}

// stored is one row of provider_events.
type stored struct {
	Provider, EventID, Kind string
	DeliveryID              *uuid.UUID
	Details                 string
}

func (h *harness) stored() []stored {
	h.t.Helper()
	rows, err := h.pool.Query(h.t.Context(), `SELECT provider, event_id, kind, delivery_id, details::text
		FROM notifier.provider_events ORDER BY provider, event_id`)
	if err != nil {
		h.t.Fatal(err)
	}
	defer rows.Close()
	var out []stored
	for rows.Next() {
		var s stored
		if err := rows.Scan(&s.Provider, &s.EventID, &s.Kind, &s.DeliveryID, &s.Details); err != nil {
			h.t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		h.t.Fatal(err)
	}
	return out
}

// fact is one message on the events stream.
type fact struct {
	Subject string
	Event   events.Event
}

// facts reads every fact published so far with a consumer. Publishing waits for the stream's
// acknowledgement before the webhook answers, so the stream's count is exact.
func (h *harness) facts() []fact {
	h.t.Helper()
	ctx := h.t.Context()
	st, err := h.js.Stream(ctx, events.Stream)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	if info.State.Msgs == 0 {
		return nil
	}
	c, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		h.t.Fatal(err)
	}
	batch, err := c.Fetch(int(info.State.Msgs), jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		h.t.Fatal(err)
	}
	var out []fact
	for m := range batch.Messages() {
		var e events.Event
		if err := json.Unmarshal(m.Data(), &e); err != nil {
			h.t.Fatal(err)
		}
		out = append(out, fact{Subject: m.Subject(), Event: e})
	}
	if err := batch.Error(); err != nil {
		h.t.Fatal(err)
	}
	if len(out) != int(info.State.Msgs) {
		h.t.Fatalf("read %d facts, the stream holds %d", len(out), info.State.Msgs)
	}
	return out
}

// post sends a request to the handler and returns the status.
func (h *harness) post(path, contentType string, body []byte, header http.Header) int {
	h.t.Helper()
	req, err := http.NewRequestWithContext(h.t.Context(), http.MethodPost, h.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// sendGridHeaders signs body as SendGrid does: ECDSA P-256 over SHA-256 of timestamp + body.
func sendGridHeaders(t *testing.T, key *ecdsa.PrivateKey, body []byte, at time.Time) http.Header {
	t.Helper()
	ts := strconv.FormatInt(at.Unix(), 10)
	digest := sha256.Sum256(append([]byte(ts), body...))
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	return http.Header{
		"X-Twilio-Email-Event-Webhook-Signature": {base64.StdEncoding.EncodeToString(sig)},
		"X-Twilio-Email-Event-Webhook-Timestamp": {ts},
	}
}

func (h *harness) postSendGrid(body []byte) int {
	h.t.Helper()
	return h.post(webhooks.SendGridPath, "application/json", body, sendGridHeaders(h.t, h.sgKey, body, time.Now()))
}

// sgEvent is one SendGrid event as SendGrid posts it, addresses and all.
func sgEvent(event, eventID string, deliveryID uuid.UUID, extra string) string {
	custom := ""
	if deliveryID != uuid.Nil {
		custom = fmt.Sprintf(`"delivery_id":%q,"notification_id":%q,`, deliveryID, uuid.New())
	}
	if extra != "" {
		extra = "," + extra
	}
	return fmt.Sprintf(`{"email":"someone@example.com","timestamp":%d,"smtp-id":"<14c5d75ce93.dfd.64b469@ismtpd-555>",`+
		`"event":%q,"category":["account"],"sg_event_id":%q,"sg_message_id":"14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",`+
		`%s"ip":"168.1.1.1","useragent":"Mozilla/5.0"%s}`,
		time.Now().Add(-time.Minute).Unix(), event, eventID, custom, extra)
}

func batch(evs ...string) []byte { return []byte("[" + strings.Join(evs, ",") + "]") }

// twilioSignature is Twilio's algorithm: base64 of HMAC-SHA1, keyed with the auth token, of the
// URL followed by each POST parameter's name and value, sorted by name.
func twilioSignature(token, u string, form url.Values) string {
	keys := make([]string, 0, len(form))
	for k := range form {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(u)
	for _, k := range keys {
		for _, v := range form[k] {
			b.WriteString(k + v)
		}
	}
	mac := hmac.New(sha1.New, []byte(token))
	mac.Write([]byte(b.String()))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// twilioForm is a status callback's form as Twilio posts it.
func twilioForm(sid, status, errorCode string) url.Values {
	f := url.Values{
		"MessageSid":    {sid},
		"SmsSid":        {sid},
		"MessageStatus": {status},
		"SmsStatus":     {status},
		"AccountSid":    {"AC" + strings.Repeat("0", 32)},
		"From":          {"+15550000000"},
		"To":            {"+15551234567"},
		"ApiVersion":    {"2010-04-01"},
	}
	if errorCode != "" {
		f.Set("ErrorCode", errorCode)
	}
	return f
}

func (h *harness) postTwilio(form url.Values, query string) int {
	h.t.Helper()
	path := webhooks.TwilioPath
	if query != "" {
		path += "?" + query
	}
	sig := twilioSignature(h.twilioToken, publicURL+path, form)
	return h.post(path, "application/x-www-form-urlencoded", []byte(form.Encode()),
		http.Header{"X-Twilio-Signature": {sig}})
}

func sid() string { return "SM" + strings.ReplaceAll(uuid.NewString(), "-", "") }

func TestSendGridUpdatesDeliveries(t *testing.T) {
	h := newHarness(t)
	delivered := h.delivery(delivery.Email, delivery.Sent, "sendgrid", "msg-delivered")
	bounced := h.delivery(delivery.Email, delivery.Sent, "sendgrid", "msg-bounced")
	opened := h.delivery(delivery.Email, delivery.Sent, "sendgrid", "msg-opened")
	// An event without custom args finds its delivery by SendGrid's message id.
	byMessageID := h.delivery(delivery.Email, delivery.Sent, "sendgrid", "14c5d75ce93.dfd.64b469")
	unknown := uuid.Must(uuid.NewV7())

	body := batch(
		sgEvent("processed", "ev-processed", delivered.ID, ""),
		sgEvent("delivered", "ev-delivered", delivered.ID, `"response":"250 OK"`),
		sgEvent("bounce", "ev-bounce", bounced.ID,
			`"type":"bounce","status":"5.1.1","bounce_classification":"Invalid Address",`+
				`"reason":"550 5.1.1 <someone@example.com>: Recipient address rejected: User unknown"`),
		sgEvent("open", "ev-open", opened.ID, `"sg_machine_open":false`),
		sgEvent("delivered", "ev-by-message-id", uuid.Nil, ""),
		sgEvent("delivered", "ev-unknown", unknown, ""),
		sgEvent("bounce", "ev-unknown-bounce", unknown, `"type":"bounce","status":"5.1.1"`),
	)
	if code := h.postSendGrid(body); code != http.StatusOK {
		t.Fatalf("status %d, want 200", code)
	}

	for _, c := range []struct {
		name          string
		id            uuid.UUID
		state, reason string
	}{
		{"delivered", delivered.ID, "delivered", ""},
		{"hard bounce", bounced.ID, "bounced", "hard_bounce 5.1.1"},
		{"opened: an open proves delivery", opened.ID, "delivered", ""},
		{"by message id", byMessageID.ID, "delivered", ""},
	} {
		if r := h.row(c.id); r.State != c.state || r.Reason != c.reason {
			t.Errorf("%s: state %q reason %q, want %q %q", c.name, r.State, r.Reason, c.state, c.reason)
		}
	}

	got := h.stored()
	if len(got) != 7 {
		t.Fatalf("%d events stored, want 7: %+v", len(got), got)
	}
	for _, s := range got {
		if strings.Contains(s.Details, "@") || strings.Contains(s.Details, "Mozilla") || strings.Contains(s.Details, "168.1.1.1") {
			t.Errorf("event %s keeps the recipient's data: %s", s.EventID, s.Details)
		}
		if strings.HasPrefix(s.EventID, "ev-unknown") != (s.DeliveryID == nil) {
			t.Errorf("event %s: delivery %v", s.EventID, s.DeliveryID)
		}
	}

	facts := h.facts()
	if len(facts) != 1 {
		t.Fatalf("%d facts, want 1 (the known hard bounce): %+v", len(facts), facts)
	}
	f := facts[0]
	if f.Subject != events.EmailInvalid || f.Event.Address != bounced.Address || f.Event.Channel != delivery.Email ||
		f.Event.DeliveryID != bounced.ID || f.Event.UserID != bounced.UserID || f.Event.Reason != "hard_bounce" {
		t.Errorf("fact %+v, want %s for %s", f, events.EmailInvalid, bounced.Address)
	}

	// SendGrid delivers the batch again (say our 200 was lost): nothing is applied twice.
	before := map[uuid.UUID]row{}
	for _, d := range []target{delivered, bounced, opened, byMessageID} {
		before[d.ID] = h.row(d.ID)
	}
	if code := h.postSendGrid(body); code != http.StatusOK {
		t.Fatalf("repeat: status %d, want 200", code)
	}
	for id, r := range before {
		if after := h.row(id); after != r {
			t.Errorf("repeat changed delivery %s: %+v -> %+v", id, r, after)
		}
	}
	if n := len(h.stored()); n != 7 {
		t.Errorf("repeat: %d events stored, want 7", n)
	}
	if n := len(h.facts()); n != 1 {
		t.Errorf("repeat: %d facts, want 1", n)
	}
}

func TestSendGridAddressFacts(t *testing.T) {
	h := newHarness(t)
	unsub := h.delivery(delivery.Email, delivery.Sent, "sendgrid", "m1")
	groupUnsub := h.delivery(delivery.Email, delivery.Sent, "sendgrid", "m2")
	spam := h.delivery(delivery.Email, delivery.Delivered, "sendgrid", "m3")
	blocked := h.delivery(delivery.Email, delivery.Sent, "sendgrid", "m4")
	dropped := h.delivery(delivery.Email, delivery.Sent, "sendgrid", "m5")
	deferred := h.delivery(delivery.Email, delivery.Sent, "sendgrid", "m6")

	body := batch(
		sgEvent("unsubscribe", "u1", unsub.ID, ""),
		sgEvent("group_unsubscribe", "u2", groupUnsub.ID, `"asm_group_id":42`),
		sgEvent("spamreport", "u3", spam.ID, ""),
		sgEvent("bounce", "u4", blocked.ID, `"type":"blocked","status":"5.7.1","reason":"blocked by <postmaster@example.net>"`),
		sgEvent("dropped", "u5", dropped.ID, `"reason":"Bounced Address"`),
		sgEvent("deferred", "u6", deferred.ID, `"attempt":"1","response":"421 try later"`),
		sgEvent("click", "u7", unsub.ID, `"url":"https://example.com/?email=someone@example.com"`),
		sgEvent("group_resubscribe", "u8", groupUnsub.ID, ""),
	)
	if code := h.postSendGrid(body); code != http.StatusOK {
		t.Fatalf("status %d, want 200", code)
	}
	for _, c := range []struct {
		name          string
		d             target
		state, reason string
	}{
		{"unsubscribe, then a click, which proves delivery", unsub, "delivered", ""},
		{"group unsubscribe", groupUnsub, "sent", ""},
		{"spam report", spam, "delivered", ""},
		{"blocked", blocked, "bounced", "blocked 5.7.1"},
		{"dropped", dropped, "bounced", "dropped: Bounced Address"},
		{"deferred", deferred, "sent", ""},
	} {
		if r := h.row(c.d.ID); r.State != c.state || r.Reason != c.reason {
			t.Errorf("%s: state %q reason %q, want %q %q", c.name, r.State, r.Reason, c.state, c.reason)
		}
	}

	want := map[uuid.UUID]string{unsub.ID: "unsubscribed", groupUnsub.ID: "unsubscribed", spam.ID: "spam_report"}
	facts := h.facts()
	if len(facts) != len(want) {
		t.Fatalf("%d facts, want %d: %+v", len(facts), len(want), facts)
	}
	addresses := map[uuid.UUID]string{unsub.ID: unsub.Address, groupUnsub.ID: groupUnsub.Address, spam.ID: spam.Address}
	for _, f := range facts {
		e := f.Event
		if f.Subject != events.OptedOut || e.Channel != delivery.Email || e.Reason != want[e.DeliveryID] ||
			e.Address != addresses[e.DeliveryID] || e.Category != "account" {
			t.Errorf("fact %+v", f)
		}
	}
}

func TestSendGridRefusesUnsignedForgedAndReplayed(t *testing.T) {
	h := newHarness(t)
	d := h.delivery(delivery.Email, delivery.Sent, "sendgrid", "m1")
	body := batch(sgEvent("bounce", "ev-1", d.ID, `"type":"bounce","status":"5.1.1"`))
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tampered := bytes.Replace(body, []byte(`"bounce"`), []byte(`"spamreport"`), 1)

	for _, c := range []struct {
		name   string
		body   []byte
		header http.Header
	}{
		{"no signature", body, nil},
		{"signed with another key", body, sendGridHeaders(t, other, body, now)},
		{"body changed after signing", tampered, sendGridHeaders(t, h.sgKey, body, now)},
		{"signature not base64", body, http.Header{
			"X-Twilio-Email-Event-Webhook-Signature": {"%%%"},
			"X-Twilio-Email-Event-Webhook-Timestamp": {strconv.FormatInt(now.Unix(), 10)},
		}},
		{"signature with a byte appended", body, func() http.Header {
			hd := sendGridHeaders(t, h.sgKey, body, now)
			der, _ := base64.StdEncoding.DecodeString(hd.Get("X-Twilio-Email-Event-Webhook-Signature"))
			hd.Set("X-Twilio-Email-Event-Webhook-Signature", base64.StdEncoding.EncodeToString(append(der, 0)))
			return hd
		}()},
		{"timestamp changed after signing", body, func() http.Header {
			hd := sendGridHeaders(t, h.sgKey, body, now)
			hd.Set("X-Twilio-Email-Event-Webhook-Timestamp", strconv.FormatInt(now.Unix()+1, 10))
			return hd
		}()},
		{"replayed 11 minutes later", body, sendGridHeaders(t, h.sgKey, body, now.Add(-11*time.Minute))},
		{"signed in the future", body, sendGridHeaders(t, h.sgKey, body, now.Add(11*time.Minute))},
	} {
		t.Run(c.name, func(t *testing.T) {
			if code := h.post(webhooks.SendGridPath, "application/json", c.body, c.header); code != http.StatusForbidden {
				t.Errorf("status %d, want 403", code)
			}
		})
	}
	if r := h.row(d.ID); r.State != "sent" {
		t.Errorf("delivery %s, want sent", r.State)
	}
	if s := h.stored(); len(s) != 0 {
		t.Errorf("events stored: %+v", s)
	}
	if f := h.facts(); len(f) != 0 {
		t.Errorf("facts published: %+v", f)
	}
	// The same batch, properly signed just now, goes through.
	if code := h.postSendGrid(body); code != http.StatusOK {
		t.Fatalf("signed: status %d", code)
	}
	if r := h.row(d.ID); r.State != "bounced" {
		t.Errorf("delivery %s, want bounced", r.State)
	}
}

func TestSendGridBadBodies(t *testing.T) {
	h := newHarness(t)
	d := h.delivery(delivery.Email, delivery.Sent, "sendgrid", "m1")
	for _, c := range []struct {
		name string
		body []byte
		want int
	}{
		{"not JSON", []byte("hello"), http.StatusBadRequest},
		{"an object, not an array", []byte(`{"event":"delivered"}`), http.StatusBadRequest},
		{"too large", bytes.Repeat([]byte(" "), 9<<20), http.StatusRequestEntityTooLarge},
		// Unusable events are skipped; the usable ones still count.
		{"some events unusable", batch(`"x"`, `{"event":"delivered"}`, `{"sg_event_id":"a\u0000b","event":"delivered"}`,
			sgEvent("delivered", "ok", d.ID, "")), http.StatusOK},
	} {
		t.Run(c.name, func(t *testing.T) {
			if code := h.postSendGrid(c.body); code != c.want {
				t.Errorf("status %d, want %d", code, c.want)
			}
		})
	}
	if s := h.stored(); len(s) != 1 || s[0].EventID != "ok" {
		t.Errorf("stored %+v, want only event ok", s)
	}
	if r := h.row(d.ID); r.State != "delivered" {
		t.Errorf("delivery %s, want delivered", r.State)
	}
}

func TestEventOvertakesTheWorker(t *testing.T) {
	h := newHarness(t)
	// The worker is still recording the send when SendGrid reports the delivery.
	d := h.delivery(delivery.Email, delivery.Sending, "", "")
	if code := h.postSendGrid(batch(sgEvent("delivered", "ev-1", d.ID, ""))); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	r := h.row(d.ID)
	if r.State != "delivered" || r.DueAt != nil || r.LeaseOwner != nil || r.Provider != "sendgrid" ||
		r.PMID != "14c5d75ce93.dfd.64b469" {
		t.Errorf("delivery %+v, want delivered, no deadline or lease, sendgrid message 14c5d75ce93.dfd.64b469", r)
	}
	// A delivery that already failed is history: events do not rewrite it.
	failed := h.delivery(delivery.Email, delivery.Failed, "sendgrid", "mf")
	if code := h.postSendGrid(batch(sgEvent("delivered", "ev-2", failed.ID, ""))); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	if r := h.row(failed.ID); r.State != "failed" {
		t.Errorf("failed delivery is now %s", r.State)
	}
}

func TestFactsArePublishedAtLeastOnce(t *testing.T) {
	h := newHarness(t)
	d := h.delivery(delivery.Email, delivery.Sent, "sendgrid", "m1")
	body := batch(sgEvent("bounce", "ev-1", d.ID, `"type":"bounce","status":"5.1.1"`))

	h.failPublish.Store(true)
	if code := h.postSendGrid(body); code != http.StatusServiceUnavailable {
		t.Fatalf("publish failing: status %d, want 503 so that SendGrid retries", code)
	}
	if r := h.row(d.ID); r.State != "bounced" {
		t.Errorf("delivery %s, want bounced", r.State)
	}
	if f := h.facts(); len(f) != 0 {
		t.Fatalf("facts %+v", f)
	}

	// SendGrid retries: the event is not new, but its fact is still owed.
	h.failPublish.Store(false)
	if code := h.postSendGrid(body); code != http.StatusOK {
		t.Fatalf("retry: status %d", code)
	}
	if f := h.facts(); len(f) != 1 || f[0].Subject != events.EmailInvalid || f[0].Event.Address != d.Address {
		t.Fatalf("facts %+v, want one %s", f, events.EmailInvalid)
	}
	if code := h.postSendGrid(body); code != http.StatusOK {
		t.Fatalf("second retry: status %d", code)
	}
	if f := h.facts(); len(f) != 1 {
		t.Errorf("%d facts after the fact was announced, want 1", len(f))
	}
}

func TestErasedUserGetsNoFact(t *testing.T) {
	h := newHarness(t)
	d := h.delivery(delivery.Email, delivery.Sent, "sendgrid", "m1")
	if _, err := h.pool.Exec(t.Context(), `UPDATE delivery.deliveries SET address = '' WHERE id = $1`, d.ID); err != nil {
		t.Fatal(err)
	}
	if code := h.postSendGrid(batch(sgEvent("unsubscribe", "ev-1", d.ID, ""))); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	if f := h.facts(); len(f) != 0 {
		t.Errorf("facts %+v, want none for an erased address", f)
	}
	var pending int
	if err := h.pool.QueryRow(t.Context(), `SELECT count(*) FROM notifier.provider_events WHERE announced_at IS NULL AND effect <> ''`).Scan(&pending); err != nil {
		t.Fatal(err)
	}
	if pending != 0 {
		t.Errorf("%d facts still owed", pending)
	}
}

func TestTwilioStatusCallbacks(t *testing.T) {
	h := newHarness(t)
	type tc struct {
		name, status, code     string
		state, reason, subject string
	}
	cases := []tc{
		{name: "sent", status: "sent", state: "sent"},
		{name: "delivered", status: "delivered", state: "delivered"},
		{name: "unreachable handset", status: "undelivered", code: "30003", state: "bounced", reason: "undelivered 30003", subject: events.NumberInvalid},
		{name: "unknown handset", status: "undelivered", code: "30005", state: "bounced", reason: "undelivered 30005", subject: events.NumberInvalid},
		{name: "landline", status: "undelivered", code: "30006", state: "bounced", reason: "undelivered 30006", subject: events.NumberInvalid},
		{name: "carrier filter", status: "undelivered", code: "30007", state: "bounced", reason: "undelivered 30007"},
		{name: "STOP", status: "failed", code: "21610", state: "bounced", reason: "failed 21610", subject: events.OptedOut},
		{name: "failed", status: "failed", code: "30008", state: "bounced", reason: "failed 30008"},
	}
	targets := map[string]target{}
	sids := map[string]string{}
	for _, c := range cases {
		sids[c.name] = sid()
		targets[c.name] = h.delivery(delivery.SMS, delivery.Sent, "twilio", sids[c.name])
		if code := h.postTwilio(twilioForm(sids[c.name], c.status, c.code), ""); code != http.StatusOK {
			t.Fatalf("%s: status %d", c.name, code)
		}
	}
	var wantFacts int
	for _, c := range cases {
		if r := h.row(targets[c.name].ID); r.State != c.state || r.Reason != c.reason {
			t.Errorf("%s: state %q reason %q, want %q %q", c.name, r.State, r.Reason, c.state, c.reason)
		}
		if c.subject != "" {
			wantFacts++
		}
	}
	facts := h.facts()
	if len(facts) != wantFacts {
		t.Fatalf("%d facts, want %d: %+v", len(facts), wantFacts, facts)
	}
	for _, c := range cases {
		if c.subject == "" {
			continue
		}
		d := targets[c.name]
		i := slices.IndexFunc(facts, func(f fact) bool { return f.Event.DeliveryID == d.ID })
		if i < 0 {
			t.Errorf("%s: no fact", c.name)
			continue
		}
		if f := facts[i]; f.Subject != c.subject || f.Event.Channel != delivery.SMS || f.Event.Address != d.Address {
			t.Errorf("%s: fact %+v, want %s", c.name, f, c.subject)
		}
	}
	for _, s := range h.stored() {
		if strings.Contains(s.Details, "+1555") {
			t.Errorf("event %s keeps a phone number: %s", s.EventID, s.Details)
		}
	}

	// Twilio repeats a callback: applied once.
	d := targets["STOP"]
	before := h.row(d.ID)
	if code := h.postTwilio(twilioForm(sids["STOP"], "failed", "21610"), ""); code != http.StatusOK {
		t.Fatalf("repeat: status %d", code)
	}
	if after := h.row(d.ID); after != before {
		t.Errorf("repeat changed the delivery: %+v -> %+v", before, after)
	}
	if n := len(h.facts()); n != wantFacts {
		t.Errorf("repeat: %d facts, want %d", n, wantFacts)
	}

	// A message Herald does not know, and the late "delivered" of one it knows as bounced.
	if code := h.postTwilio(twilioForm(sid(), "undelivered", "30003"), ""); code != http.StatusOK {
		t.Errorf("unknown message: status %d", code)
	}
	if code := h.postTwilio(twilioForm(sids["STOP"], "delivered", ""), ""); code != http.StatusOK {
		t.Errorf("late delivered: status %d", code)
	}
	if r := h.row(d.ID); r.State != "bounced" {
		t.Errorf("late delivered moved a bounced delivery to %s", r.State)
	}
	if n := len(h.facts()); n != wantFacts {
		t.Errorf("unknown message: %d facts, want %d", n, wantFacts)
	}
}

func TestTwilioCallbackNamingTheDelivery(t *testing.T) {
	h := newHarness(t)
	// The worker has not recorded the SID yet; the callback URL names the delivery.
	d := h.delivery(delivery.SMS, delivery.Sending, "", "")
	s := sid()
	if code := h.postTwilio(twilioForm(s, "delivered", ""), "delivery_id="+d.ID.String()); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	if r := h.row(d.ID); r.State != "delivered" || r.Provider != "twilio" || r.PMID != s {
		t.Errorf("delivery %+v, want delivered with twilio message %s", r, s)
	}
}

func TestTwilioRefusesForgedCallbacks(t *testing.T) {
	h := newHarness(t)
	s := sid()
	d := h.delivery(delivery.SMS, delivery.Sent, "twilio", s)
	form := twilioForm(s, "failed", "21610")
	u := publicURL + webhooks.TwilioPath
	tampered := twilioForm(s, "failed", "21610")
	tampered.Set("ErrorCode", "30003")

	for _, c := range []struct {
		name string
		path string
		form url.Values
		sig  string
	}{
		{"no signature", webhooks.TwilioPath, form, ""},
		{"another account's token", webhooks.TwilioPath, form, twilioSignature("another-token", u, form)},
		{"signed for another URL", webhooks.TwilioPath, form, twilioSignature(h.twilioToken, "https://evil.example.com"+webhooks.TwilioPath, form)},
		{"parameter changed after signing", webhooks.TwilioPath, tampered, twilioSignature(h.twilioToken, u, form)},
		{"query added after signing", webhooks.TwilioPath + "?delivery_id=" + uuid.NewString(), form, twilioSignature(h.twilioToken, u, form)},
	} {
		t.Run(c.name, func(t *testing.T) {
			hd := http.Header{}
			if c.sig != "" {
				hd.Set("X-Twilio-Signature", c.sig)
			}
			if code := h.post(c.path, "application/x-www-form-urlencoded", []byte(c.form.Encode()), hd); code != http.StatusForbidden {
				t.Errorf("status %d, want 403", code)
			}
		})
	}
	if r := h.row(d.ID); r.State != "sent" {
		t.Errorf("delivery %s, want sent", r.State)
	}
	if st := h.stored(); len(st) != 0 {
		t.Errorf("events stored: %+v", st)
	}
	if f := h.facts(); len(f) != 0 {
		t.Errorf("facts: %+v", f)
	}
	// Twilio signs https URLs with or without the default port; both are accepted.
	withPort := twilioSignature(h.twilioToken, "https://notify.example.com:443/herald"+webhooks.TwilioPath, form)
	if code := h.post(webhooks.TwilioPath, "application/x-www-form-urlencoded", []byte(form.Encode()),
		http.Header{"X-Twilio-Signature": {withPort}}); code != http.StatusOK {
		t.Errorf("signed with the port: status %d", code)
	}
}

func TestWebhooksOffWithoutSecrets(t *testing.T) {
	wh, err := webhooks.New(webhooks.Config{Store: postgres.New(nil, nil)})
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{webhooks.SendGridPath, webhooks.TwilioPath} {
		rec := httptest.NewRecorder()
		wh.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, strings.NewReader("[]")))
		if rec.Code != http.StatusNotFound {
			t.Errorf("POST %s: %d, want 404", path, rec.Code)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pemKey := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der384, _ := x509.MarshalPKIXPublicKey(&p384.PublicKey)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	derRSA, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	edKey, _, _ := ed25519.GenerateKey(rand.Reader)
	derEd, _ := x509.MarshalPKIXPublicKey(edKey)
	store := postgres.New(nil, nil)
	publish := func(context.Context, string, events.Event) error { return nil }

	for _, c := range []struct {
		name string
		cfg  webhooks.Config
		ok   bool
	}{
		{"base64 key", webhooks.Config{SendGridPublicKey: base64.StdEncoding.EncodeToString(der), Store: store, Publish: publish}, true},
		{"PEM key", webhooks.Config{SendGridPublicKey: pemKey, Store: store, Publish: publish}, true},
		{"P-384 key", webhooks.Config{SendGridPublicKey: base64.StdEncoding.EncodeToString(der384), Store: store, Publish: publish}, false},
		{"RSA key", webhooks.Config{SendGridPublicKey: base64.StdEncoding.EncodeToString(derRSA), Store: store, Publish: publish}, false},
		{"Ed25519 key as PEM", webhooks.Config{SendGridPublicKey: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: derEd})),
			Store: store, Publish: publish}, false},
		{"garbage key", webhooks.Config{SendGridPublicKey: "not a key", Store: store, Publish: publish}, false},
		{"no store", webhooks.Config{}, false},
		{"nowhere to publish", webhooks.Config{SendGridPublicKey: pemKey, Store: store}, false},
		{"Twilio without public URL", webhooks.Config{TwilioAuthToken: "t", Store: store, Publish: publish}, false},
		{"Twilio with a relative URL", webhooks.Config{TwilioAuthToken: "t", PublicURL: "/herald", Store: store, Publish: publish}, false},
		{"Twilio", webhooks.Config{TwilioAuthToken: "t", PublicURL: "https://h.example.com/", Store: store, Publish: publish}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := webhooks.New(c.cfg)
			if (err == nil) != c.ok {
				t.Errorf("err %v, want ok %v", err, c.ok)
			}
			if err != nil && strings.Contains(err.Error(), pemKey) {
				t.Errorf("error quotes the key")
			}
		})
	}
}
