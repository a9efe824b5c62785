package e2e

// The HTTP/JSON API end to end: every route the protos bind, called as a curl user would call
// it (plain net/http, JSON written by hand, lowerCamelCase in answers, enums as names) against
// a real stack, each checked by what it did - a delivery sent, a setting stored, a user gone -
// and not only by its status. The errors are the real services' own, through the gateway.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/server"
	"github.com/heraldhq/herald/internal/tlsconfig"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/proto/openapi"
	contactsd "github.com/heraldhq/herald/services/contacts/daemon"
	notifierd "github.com/heraldhq/herald/services/notifier/daemon"
)

// jsonAPI calls one HTTP port of a stack as a curl user would: a base URL and an app key.
type jsonAPI struct {
	name string // whose port: "notifier" or "contacts"
	base string
	key  string // "" sends no Authorization header
	// seen records the routes that answered 200, for the check that every route was exercised.
	seen *routesSeen
}

// as returns the same API called with another key.
func (a jsonAPI) as(key string) jsonAPI {
	a.key = key
	return a
}

// jsonReply is an HTTP answer, kept whole.
type jsonReply struct {
	method, url string
	status      int
	header      http.Header
	body        []byte
}

func (r jsonReply) String() string {
	return fmt.Sprintf("%s %s: %d %s", r.method, r.url, r.status, r.body)
}

var jsonClient = &http.Client{Timeout: 30 * time.Second}

// call sends body (none when "") to path, with header's name/value pairs.
func (a jsonAPI) call(t *testing.T, method, path, body string, header ...string) jsonReply {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if a.key != "" {
		req.Header.Set("Authorization", "Bearer "+a.key)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	res, err := jsonClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode == http.StatusOK && a.seen != nil {
		a.seen.add(a.base, method, req.URL.EscapedPath())
	}
	return jsonReply{method: method, url: path, status: res.StatusCode, header: res.Header, body: raw}
}

// ok decodes a 200 answer, failing the test on any other.
func ok[T any](t *testing.T, r jsonReply) T {
	t.Helper()
	var v T
	if r.status != http.StatusOK {
		t.Fatalf("%v, want 200", r)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q", r.method, r.url, ct)
	}
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("%s %s: answer %s: %v", r.method, r.url, r.body, err)
	}
	return v
}

// rpcStatus is an error answer: a google.rpc.Status as JSON.
type rpcStatus struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Details []struct {
		Type            string `json:"@type"`
		FieldViolations []struct {
			Field       string `json:"field"`
			Description string `json:"description"`
		} `json:"fieldViolations"`
		RetryDelay string `json:"retryDelay"`
	} `json:"details"`
}

// refused decodes an error answer, failing the test unless it has the HTTP status and the code.
func refused(t *testing.T, r jsonReply, httpStatus int, code codes.Code) rpcStatus {
	t.Helper()
	var st rpcStatus
	if r.status != httpStatus {
		t.Fatalf("%v, want %d", r, httpStatus)
	}
	if err := json.Unmarshal(r.body, &st); err != nil {
		t.Fatalf("%v: not a google.rpc.Status: %v", r, err)
	}
	if st.Code != int(code) || st.Message == "" {
		t.Fatalf("%v, want code %d (%s) with a message", r, code, code)
	}
	return st
}

// violation reports whether st holds a BadRequest field violation of field, with a description.
func (st rpcStatus) violation(field string) bool {
	for _, d := range st.Details {
		if d.Type != "type.googleapis.com/google.rpc.BadRequest" {
			continue
		}
		for _, v := range d.FieldViolations {
			if v.Field == field && v.Description != "" {
				return true
			}
		}
	}
	return false
}

// routingError reports whether r is the gateway mux's own answer to a request no route serves
// (404 "Not Found", or a route served under another method), rather than a service's answer.
func routingError(r jsonReply) bool {
	var st rpcStatus
	json.Unmarshal(r.body, &st)
	return r.status == http.StatusMethodNotAllowed || st.Message == "Method Not Allowed" ||
		r.status == http.StatusNotFound && st.Message == "Not Found"
}

type jsonDelivery struct {
	DeliveryID        string `json:"deliveryId"`
	Channel           string `json:"channel"`
	State             string `json:"state"`
	Reason            string `json:"reason"`
	Provider          string `json:"provider"`
	ProviderMessageID string `json:"providerMessageId"`
	Step              int    `json:"step"`
}

type jsonNotification struct {
	NotificationID string `json:"notificationId"`
	IdempotencyKey string `json:"idempotencyKey"`
	Category       string `json:"category"`
	UserID         string `json:"userId"`
	Template       struct {
		Name    string `json:"name"`
		Version int    `json:"version"`
	} `json:"template"`
	Deliveries []jsonDelivery `json:"deliveries"`
}

type jsonSent struct {
	NotificationID string         `json:"notificationId"`
	Duplicate      bool           `json:"duplicate"`
	Deliveries     []jsonDelivery `json:"deliveries"`
}

type jsonBatch struct {
	Results []struct {
		Response *jsonSent `json:"response"`
		Error    *struct {
			Code       string `json:"code"`
			Violations []struct {
				Field string `json:"field"`
			} `json:"violations"`
		} `json:"error"`
	} `json:"results"`
}

type jsonUser struct {
	UserID   string `json:"userId"`
	Email    string `json:"email"`
	Phone    string `json:"phone"`
	Locale   string `json:"locale"`
	Timezone string `json:"timezone"`
}

type jsonDevice struct {
	UserID   string `json:"userId"`
	Platform string `json:"platform"`
	Token    string `json:"token"`
	App      string `json:"app"`
	Active   bool   `json:"active"`
}

type jsonSettings struct {
	GlobalOptOut bool `json:"globalOptOut"`
	Categories   []struct {
		Category string `json:"category"`
		OptedOut *bool  `json:"optedOut"`
	} `json:"categories"`
}

// emailJSON is a Send of inline content to one email address, as a user would type it.
func emailJSON(to, subject string) string {
	return fmt.Sprintf(`{"recipient": {"address": {"email": %q}}, "category": "account",
  "content": {"subject": %q, "body": "Thanks for your order."}}`, to, subject)
}

// pending reports whether a delivery may still change state on its own.
func pending(state string) bool {
	switch state {
	case "DELIVERY_STATE_QUEUED", "DELIVERY_STATE_SCHEDULED", "DELIVERY_STATE_SENDING", "DELIVERY_STATE_RETRYING",
		"DELIVERY_STATE_WAITING":
		return true
	}
	return false
}

// waitSettled polls GET /v1/notifications/{id} until none of its deliveries is pending.
func waitSettled(t *testing.T, api jsonAPI, id string) jsonNotification {
	t.Helper()
	var n jsonNotification
	waitFor(t, "the deliveries of "+id+" to settle", 30*time.Second, func() (bool, error) {
		n = ok[struct {
			Notification jsonNotification `json:"notification"`
		}](t, api.call(t, "GET", "/v1/notifications/"+id, "")).Notification
		return !slices.ContainsFunc(n.Deliveries, func(d jsonDelivery) bool { return pending(d.State) }), nil
	})
	return n
}

// routesSeen collects the routes that answered 200, per HTTP port.
type routesSeen struct {
	mu    sync.Mutex
	calls map[string][]string // base URL -> "METHOD escaped-path"
}

func (r *routesSeen) add(base, method, path string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.calls == nil {
		r.calls = map[string][]string{}
	}
	r.calls[base] = append(r.calls[base], method+" "+path)
}

// served reports whether some call to base answered 200 on the route method+template, an
// OpenAPI path whose {parameters} stand for one path segment each.
func (r *routesSeen) served(base, method, template string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	re := regexp.MustCompile(`^` + method + ` ` +
		regexp.MustCompile(`\\\{[^}]*\\\}`).ReplaceAllString(regexp.QuoteMeta(template), `[^/]+`) + `$`)
	return slices.ContainsFunc(r.calls[base], re.MatchString)
}

// openAPIRoutes reads the routes of the OpenAPI document: "METHOD /path/{param}".
func openAPIRoutes(t *testing.T, doc []byte) []string {
	t.Helper()
	var d struct {
		Swagger string                                `json:"swagger"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(doc, &d); err != nil || d.Swagger != "2.0" {
		t.Fatalf("the OpenAPI document (version %q) does not parse: %v", d.Swagger, err)
	}
	var routes []string
	for path, ops := range d.Paths {
		for method := range ops {
			routes = append(routes, strings.ToUpper(method)+" "+path)
		}
	}
	slices.Sort(routes)
	return routes
}

// TestHTTPAPI runs every HTTP/JSON route against one stack, through the notifier's port (which
// serves the whole API) and the contacts service's own (which serves ContactsService).
func TestHTTPAPI(t *testing.T) {
	s := startStack(t, stackOptions{})
	ctx := context.Background()
	seen := &routesSeen{}
	notifier := jsonAPI{name: "notifier", base: "http://" + s.notifier.HTTPAddr(), key: s.key, seen: seen}
	contacts := jsonAPI{name: "contacts", base: "http://" + s.contacts.HTTPAddr(), key: s.key, seen: seen}
	admin := heraldv1.NewAdminServiceClient(s.conn)
	// run runs a subtest, counting those defined and those run: the check that every route was
	// exercised holds only when no -run pattern left one out.
	var defined, ran int
	run := func(name string, f func(t *testing.T)) {
		defined++
		t.Run(name, func(t *testing.T) {
			ran++
			f(t)
		})
	}

	// sent is the first notification's email delivery, which TrackEvent uses.
	var sent jsonDelivery
	run("send reaches SENT", func(t *testing.T) {
		res := ok[jsonSent](t, notifier.call(t, "POST", "/v1/notifications:send", emailJSON("ada@example.com", "Your receipt")))
		if res.NotificationID == "" || res.Duplicate || len(res.Deliveries) != 1 ||
			res.Deliveries[0].Channel != "CHANNEL_EMAIL" || res.Deliveries[0].State != "DELIVERY_STATE_QUEUED" {
			t.Fatalf("Send answered %+v, want one queued email delivery", res)
		}
		n := waitSettled(t, notifier, res.NotificationID)
		sent = n.Deliveries[0]
		if sent.State != "DELIVERY_STATE_SENT" || sent.Provider != "sendgrid" || sent.ProviderMessageID == "" ||
			n.Category != "account" || n.NotificationID != res.NotificationID {
			t.Fatalf("notification %+v, want its email SENT by sendgrid", n)
		}
		if c := s.fake.Count(sent.DeliveryID); c != 1 {
			t.Errorf("the provider received the email %d times, want 1", c)
		}
	})

	run("fallback chain", func(t *testing.T) {
		s.fake.RefuseAddress("refused@example.com")
		body := `{"recipient": {"address": {"email": "refused@example.com", "phone": "+14155550100"}},
			"category": "account", "content": {"subject": "Hi", "body": "Thanks for your order."},
			"fallback": {"channels": ["CHANNEL_EMAIL", "CHANNEL_SMS"], "stepTimeout": "600s"}}`
		show := func(ds []jsonDelivery) []string {
			var out []string
			for _, d := range ds {
				out = append(out, fmt.Sprintf("%d %s %s", d.Step, d.Channel, d.State))
			}
			return out
		}
		ex := ok[struct {
			Deliveries []jsonDelivery `json:"deliveries"`
		}](t, notifier.call(t, "POST", "/v1/notifications:explain", body))
		if got, want := show(ex.Deliveries), []string{"1 CHANNEL_EMAIL DELIVERY_STATE_QUEUED",
			"2 CHANNEL_SMS DELIVERY_STATE_WAITING"}; !slices.Equal(got, want) {
			t.Errorf("explain: %q, want %q", got, want)
		}
		res := ok[jsonSent](t, notifier.call(t, "POST", "/v1/notifications:send", body))
		n := waitSettled(t, notifier, res.NotificationID)
		if got, want := show(n.Deliveries), []string{"1 CHANNEL_EMAIL DELIVERY_STATE_FAILED",
			"2 CHANNEL_SMS DELIVERY_STATE_SENT"}; !slices.Equal(got, want) {
			t.Errorf("steps: %q, want %q", got, want)
		}
		r := notifier.call(t, "POST", "/v1/notifications:send", strings.Replace(body, `"CHANNEL_SMS"]`, `"CHANNEL_EMAIL"]`, 1))
		if st := refused(t, r, http.StatusBadRequest, codes.InvalidArgument); !st.violation("fallback.channels[1]") {
			t.Errorf("a repeated channel: %s, want a violation of fallback.channels[1]", r)
		}
	})

	run("idempotency key", func(t *testing.T) {
		key := uuid.NewString()
		body := emailJSON("bea@example.com", "Idempotent")
		first := ok[jsonSent](t, notifier.call(t, "POST", "/v1/notifications:send", body, "Idempotency-Key", key))
		again := ok[jsonSent](t, notifier.call(t, "POST", "/v1/notifications:send", body, "Idempotency-Key", key))
		if first.Duplicate || !again.Duplicate || again.NotificationID != first.NotificationID {
			t.Fatalf("the same Idempotency-Key twice answered %+v then %+v, want the same id, duplicate the second time", first, again)
		}
		n := ok[struct {
			Notification jsonNotification `json:"notification"`
		}](t, notifier.call(t, "GET", "/v1/notifications/"+first.NotificationID, "")).Notification
		if n.IdempotencyKey != key {
			t.Errorf("the notification's idempotencyKey is %q, want the header's %q", n.IdempotencyKey, key)
		}
		// The body's key agreeing with the header's is one key.
		withBody := `{"idempotencyKey": "` + key + `",` + body[1:]
		if res := ok[jsonSent](t, notifier.call(t, "POST", "/v1/notifications:send", withBody, "Idempotency-Key", key)); !res.Duplicate {
			t.Errorf("header and body with the same key answered %+v, want the duplicate", res)
		}

		st := refused(t, notifier.call(t, "POST", "/v1/notifications:send",
			`{"idempotency_key": "another",`+body[1:], "Idempotency-Key", key), 400, codes.InvalidArgument)
		if !st.violation("idempotency_key") {
			t.Errorf("a body key that differs from the header's: %+v, want a violation of idempotency_key", st)
		}
		refused(t, notifier.call(t, "POST", "/v1/notifications:send", emailJSON("bea@example.com", "Another body"),
			"Idempotency-Key", key), 409, codes.AlreadyExists)
		if n := count(t, s, `SELECT count(*) FROM notifier.notifications WHERE idempotency_key = $1`, key); n != 1 {
			t.Errorf("%d notifications hold the key, want 1", n)
		}
	})

	run("sendBatch", func(t *testing.T) {
		key := uuid.NewString()
		body := `{"category": "account", "content": {"subject": "Batch", "body": "To you both."},
  "recipients": [{"recipient": {"address": {"email": "cy@example.com"}}},
                 {"recipient": {"address": {"email": "di@example.com"}}}]}`
		first := ok[jsonBatch](t, notifier.call(t, "POST", "/v1/notifications:sendBatch", body, "Idempotency-Key", key))
		again := ok[jsonBatch](t, notifier.call(t, "POST", "/v1/notifications:sendBatch", body, "Idempotency-Key", key))
		if len(first.Results) != 2 || len(again.Results) != 2 {
			t.Fatalf("SendBatch answered %+v then %+v, want two results each", first, again)
		}
		for i := range 2 {
			a, b := first.Results[i].Response, again.Results[i].Response
			if a == nil || b == nil || a.Duplicate || !b.Duplicate || a.NotificationID != b.NotificationID {
				t.Fatalf("recipient %d: answered %+v then %+v, want the same notification, duplicate the second time", i, a, b)
			}
			// Each recipient's key is derived from the batch's: "<key>/<index>".
			n := waitSettled(t, notifier, a.NotificationID)
			if n.IdempotencyKey != fmt.Sprintf("%s/%d", key, i) || n.Deliveries[0].State != "DELIVERY_STATE_SENT" {
				t.Errorf("recipient %d: %+v, want key %s/%d and the email SENT", i, n, key, i)
			}
		}
		if first.Results[0].Response.NotificationID == first.Results[1].Response.NotificationID {
			t.Error("the two recipients answered one notification")
		}

		// One bad recipient fails alone, with its field named.
		mixed := ok[jsonBatch](t, notifier.call(t, "POST", "/v1/notifications:sendBatch",
			`{"category": "account", "content": {"subject": "Batch", "body": "Hi."},
  "recipients": [{"recipient": {"address": {"email": "ed@example.com"}}},
                 {"recipient": {"address": {"email": "not an address"}}}]}`))
		if len(mixed.Results) != 2 || mixed.Results[0].Response == nil || mixed.Results[1].Error == nil ||
			mixed.Results[1].Error.Code != "INVALID_ARGUMENT" || len(mixed.Results[1].Error.Violations) == 0 ||
			mixed.Results[1].Error.Violations[0].Field != "recipient.address.email" {
			t.Errorf("a batch with a bad address answered %+v, want the first sent and the second refused naming its email", mixed)
		}
	})

	run("cancel", func(t *testing.T) {
		// snake_case names are accepted in requests too.
		later := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		res := ok[jsonSent](t, notifier.call(t, "POST", "/v1/notifications:send",
			`{"send_at": "`+later+`",`+emailJSON("fay@example.com", "Later")[1:]))
		if len(res.Deliveries) != 1 || res.Deliveries[0].State != "DELIVERY_STATE_SCHEDULED" {
			t.Fatalf("Send at %s answered %+v, want one scheduled delivery", later, res)
		}
		c := ok[struct {
			Notification jsonNotification `json:"notification"`
		}](t, notifier.call(t, "POST", "/v1/notifications/"+res.NotificationID+":cancel", `{}`))
		if len(c.Notification.Deliveries) != 1 || c.Notification.Deliveries[0].State != "DELIVERY_STATE_CANCELED" {
			t.Fatalf("cancel answered %+v, want the delivery CANCELED", c.Notification)
		}
		n, err := s.notify.GetNotification(ctx, &heraldv1.GetNotificationRequest{NotificationId: res.NotificationID})
		if err != nil || n.Notification.Deliveries[0].State != heraldv1.DeliveryState_DELIVERY_STATE_CANCELED {
			t.Fatalf("after the cancel, GetNotification = %v, %v, want CANCELED", n, err)
		}
	})

	run("explain", func(t *testing.T) {
		before := count(t, s, `SELECT count(*) FROM notifier.notifications`)
		// The body is the SendRequest itself (body: "request").
		res := ok[struct {
			Deliveries []struct {
				Channel string `json:"channel"`
				State   string `json:"state"`
				Content struct {
					EmailSubject string `json:"emailSubject"`
					EmailText    string `json:"emailText"`
				} `json:"content"`
			} `json:"deliveries"`
		}](t, notifier.call(t, "POST", "/v1/notifications:explain", emailJSON("gus@example.com", "Explained")))
		if len(res.Deliveries) != 1 || res.Deliveries[0].Channel != "CHANNEL_EMAIL" || res.Deliveries[0].State != "DELIVERY_STATE_QUEUED" ||
			res.Deliveries[0].Content.EmailSubject != "Explained" || res.Deliveries[0].Content.EmailText != "Thanks for your order." {
			t.Fatalf("Explain answered %+v, want one queued email with its content", res)
		}
		if after := count(t, s, `SELECT count(*) FROM notifier.notifications`); after != before {
			t.Errorf("Explain created %d notifications", after-before)
		}
	})

	run("topics", func(t *testing.T) {
		httpTopics(t, s, notifier, contacts) // topic_test.go
	})

	run("trackEvent", func(t *testing.T) {
		if sent.DeliveryID == "" {
			t.Skip("needs the delivery of 'send reaches SENT', which failed")
		}
		path := "/v1/deliveries/" + sent.DeliveryID + "/events"
		type tracked struct {
			Recorded bool `json:"recorded"`
		}
		if r := ok[tracked](t, notifier.call(t, "POST", path, `{"kind": "ENGAGEMENT_KIND_OPENED"}`)); !r.Recorded {
			t.Error("the first open was not recorded")
		}
		if r := ok[tracked](t, notifier.call(t, "POST", path, `{"kind": "ENGAGEMENT_KIND_OPENED"}`)); r.Recorded {
			t.Error("the second open was recorded again")
		}
		if n := count(t, s, `SELECT count(*) FROM notifier.provider_events WHERE provider = 'app' AND delivery_id = $1`,
			sent.DeliveryID); n != 1 {
			t.Errorf("%d engagement events stored, want 1", n)
		}
		refused(t, notifier.call(t, "POST", "/v1/deliveries/"+uuid.NewString()+"/events", `{"kind": "ENGAGEMENT_KIND_OPENED"}`),
			404, codes.NotFound)
	})

	run("templates", func(t *testing.T) {
		// The body is the Template itself (body: "template").
		type stored struct {
			Template struct {
				Name    string `json:"name"`
				Version int    `json:"version"`
				Parts   struct {
					EmailSubject string `json:"emailSubject"`
				} `json:"parts"`
			} `json:"template"`
		}
		v1 := ok[stored](t, notifier.call(t, "POST", "/v1/templates", `{"name": "http-receipt", "description": "A receipt",
  "parts": {"emailSubject": "Receipt for {{.name}}", "emailText": "Hello {{.name}}", "emailHtml": "<p>Hello {{.name}}</p>"}}`))
		v2 := ok[stored](t, notifier.call(t, "POST", "/v1/templates", `{"name": "http-receipt",
  "parts": {"emailSubject": "Your receipt, {{.name}}", "emailText": "Hello {{.name}}"}}`))
		if v1.Template.Name != "http-receipt" || v1.Template.Version != 1 || v2.Template.Version != 2 {
			t.Fatalf("CreateTemplate answered %+v then %+v, want versions 1 and 2", v1, v2)
		}
		got := ok[stored](t, notifier.call(t, "GET", "/v1/templates/http-receipt?version=1", ""))
		if got.Template.Version != 1 || got.Template.Parts.EmailSubject != "Receipt for {{.name}}" {
			t.Errorf("GetTemplate version=1 answered %+v", got)
		}
		if got := ok[stored](t, notifier.call(t, "GET", "/v1/templates/http-receipt", "")); got.Template.Version != 2 {
			t.Errorf("GetTemplate without a version answered %+v, want version 2", got)
		}
		r := ok[struct {
			Version int `json:"version"`
			Content struct {
				EmailSubject string `json:"emailSubject"`
				EmailHTML    string `json:"emailHtml"`
			} `json:"content"`
		}](t, notifier.call(t, "POST", "/v1/templates/http-receipt:render", `{"version": 1, "data": {"name": "<Ada>"}}`))
		if r.Version != 1 || r.Content.EmailSubject != "Receipt for <Ada>" || r.Content.EmailHTML != "<p>Hello &lt;Ada&gt;</p>" {
			t.Errorf("RenderTemplate answered %+v", r)
		}
		// A Send with the template, to see it rendered where it lands.
		res := ok[jsonSent](t, notifier.call(t, "POST", "/v1/notifications:send", `{"recipient": {"address": {"email": "hal@example.com"}},
  "category": "account", "template": {"name": "http-receipt", "version": 1}, "data": {"name": "Hal"}}`))
		n := waitSettled(t, notifier, res.NotificationID)
		if n.Template.Name != "http-receipt" || n.Template.Version != 1 || n.Deliveries[0].State != "DELIVERY_STATE_SENT" {
			t.Fatalf("notification %+v, want http-receipt v1 SENT", n)
		}
		var subject string
		for _, m := range s.fake.Messages() {
			if m.CustomArgs["delivery_id"] == n.Deliveries[0].DeliveryID {
				subject = m.Subject
			}
		}
		if subject != "Receipt for Hal" {
			t.Errorf("the provider received subject %q, want %q", subject, "Receipt for Hal")
		}
		refused(t, notifier.call(t, "GET", "/v1/templates/no-such-template", ""), 404, codes.NotFound)
	})

	for _, api := range []jsonAPI{notifier, contacts} {
		run("contacts through the "+api.name+" port", func(t *testing.T) {
			httpContacts(t, s, api)
		})
	}

	run("user ids in paths", func(t *testing.T) {
		for _, api := range []jsonAPI{notifier, contacts} {
			for _, id := range []string{"tenant:42", "Zoë Ångström", "東京 user", "a+b", "100%", "q?x=1#f", "tab\there", "🎉"} {
				stored := ok[struct {
					User jsonUser `json:"user"`
				}](t, api.call(t, "PUT", "/v1/users/"+url.PathEscape(id), `{"locale": "en-GB"}`))
				if stored.User.UserID != id {
					t.Errorf("%s: PUT stored user %q, want %q", api.base, stored.User.UserID, id)
				}
				u, err := s.people.GetUser(ctx, &heraldv1.GetUserRequest{UserId: id})
				if err != nil || u.User.Locale != "en-GB" {
					t.Errorf("%s: the user %q put over HTTP, read over gRPC: %v, %v", api.base, id, u, err)
				}
				got := ok[struct {
					User jsonUser `json:"user"`
				}](t, api.call(t, "GET", "/v1/users/"+url.PathEscape(id), ""))
				if got.User.UserID != id {
					t.Errorf("%s: GET answered user %q, want %q", api.base, got.User.UserID, id)
				}
				ok[struct{}](t, api.call(t, "DELETE", "/v1/users/"+url.PathEscape(id), ""))
			}
		}
		// Escaped where no escaping is needed, as other clients may write them.
		for raw, id := range map[string]string{"ada%40example": "ada@example", "tenant%3A42": "tenant:42", "a%2Bb": "a+b"} {
			if _, err := s.people.UpsertUser(ctx, &heraldv1.UpsertUserRequest{User: &heraldv1.User{UserId: id}}); err != nil {
				t.Fatal(err)
			}
			got := ok[struct {
				User jsonUser `json:"user"`
			}](t, contacts.call(t, "GET", "/v1/users/"+raw, ""))
			if got.User.UserID != id {
				t.Errorf("GET /v1/users/%s answered user %q, want %q", raw, got.User.UserID, id)
			}
		}
		// The path names the user, whatever the body says.
		ok[struct{}](t, notifier.call(t, "PUT", "/v1/users/path-user", `{"userId": "body-user", "email": "pat@example.com"}`))
		if _, err := s.people.GetUser(ctx, &heraldv1.GetUserRequest{UserId: "path-user"}); err != nil {
			t.Errorf("the user the path names: %v", err)
		}
		refused(t, notifier.call(t, "GET", "/v1/users/body-user", ""), 404, codes.NotFound)
		httpSlashInUserID(t, s, notifier, contacts)
	})

	run("errors", func(t *testing.T) {
		httpErrors(t, s, notifier, contacts, admin)
	})

	run("mutual TLS and --disable-http-api", func(t *testing.T) {
		httpUnderMutualTLS(t, s)
	})

	run("curl example", func(t *testing.T) {
		runCurlExample(t, s, notifier)
	})

	run("openapi", func(t *testing.T) {
		for _, api := range []jsonAPI{notifier, contacts} {
			res, err := jsonClient.Get(api.base + "/openapi.json")
			if err != nil {
				t.Fatal(err)
			}
			doc, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/json" || string(doc) != string(openapi.Document) {
				t.Fatalf("GET %s/openapi.json: %d %q, want the document", api.base, res.StatusCode, res.Header.Get("Content-Type"))
			}
		}
		routes := openAPIRoutes(t, openapi.Document)
		if len(routes) < 20 {
			t.Fatalf("the document has %d routes: %v", len(routes), routes)
		}
		// Each route is served: the notifier's port serves them all, the contacts service's
		// only ContactsService's. Path parameters are dummies, so the services answer NOT_FOUND or
		// INVALID_ARGUMENT often enough; what matters is that the answer is theirs and not the
		// router's.
		// Probes are not exercise: they stay out of seen.
		probe, probeContacts := notifier, contacts
		probe.seen, probeContacts.seen = nil, nil
		param := regexp.MustCompile(`\{[^}]*\}`)
		for _, route := range routes {
			method, path, _ := strings.Cut(route, " ")
			path = param.ReplaceAllStringFunc(path, func(p string) string {
				if strings.HasSuffix(p, "Id}") && !strings.Contains(strings.ToLower(p), "user") {
					return uuid.NewString() // a notification or delivery id is a UUID
				}
				return "openapi-probe"
			})
			body := ""
			if method == "POST" || method == "PUT" {
				body = "{}"
			}
			if r := probe.call(t, method, path, body); routingError(r) {
				t.Errorf("the notifier does not serve %s: %v", route, r)
			}
			if r := probeContacts.call(t, method, path, body); contactsRoute(path) == routingError(r) {
				t.Errorf("the contacts service: %v, and %s is a ContactsService route: %v", r, route, contactsRoute(path))
			}
		}
	})

	run("in-app inbox", func(t *testing.T) { // inbox_test.go has the rest
		if _, err := s.people.UpsertUser(ctx, &heraldv1.UpsertUserRequest{User: &heraldv1.User{UserId: "hal"}}); err != nil {
			t.Fatal(err)
		}
		type page struct {
			Messages []struct {
				ID, Title, ReadTime, ArchiveTime string
			}
			NextPageToken string
		}
		// The inbox lists messages in the order they were stored, newest first: the second Send
		// goes once the first is stored, or a worker could store them the other way round.
		var ids []string
		for i, title := range []string{"First", "Second"} {
			res := ok[jsonSent](t, notifier.call(t, "POST", "/v1/notifications:send", `{"recipient": {"userId": "hal"},
				"category": "account", "channels": ["CHANNEL_INBOX"], "content": {"title": "`+title+`", "body": "b"}}`))
			ids = append(ids, res.Deliveries[0].DeliveryID)
			waitFor(t, title+" in the inbox", 30*time.Second, func() (bool, error) {
				return len(ok[page](t, notifier.call(t, "GET", "/v1/inbox/messages?user_id=hal", "")).Messages) == i+1, nil
			})
		}
		tok := ok[struct{ Token, ExpireTime string }](t, notifier.call(t, "POST", "/v1/inbox/tokens", `{"user_id": "hal", "ttl": "600s"}`))
		if tok.Token == "" || tok.ExpireTime == "" {
			t.Fatalf("CreateUserToken answered %+v", tok)
		}
		user := notifier.as(tok.Token)
		first := ok[page](t, user.call(t, "GET", "/v1/inbox/messages?page_size=1", ""))
		if len(first.Messages) != 1 || first.Messages[0].Title != "Second" || first.NextPageToken == "" {
			t.Fatalf("first page %+v, want the newest and a next page", first)
		}
		next := ok[page](t, user.call(t, "GET", "/v1/inbox/messages?page_size=1&page_token="+first.NextPageToken, ""))
		if len(next.Messages) != 1 || next.Messages[0].Title != "First" {
			t.Fatalf("second page %+v", next)
		}
		// Counts are JSON numbers (an int64 would be a string), and zero is left out.
		type counts struct{ Marked, Archived, Unread int }
		if c := ok[counts](t, user.call(t, "GET", "/v1/inbox/unread-count", "")); c.Unread != 2 {
			t.Fatalf("unread %+v, want 2", c)
		}
		if c := ok[counts](t, user.call(t, "POST", "/v1/inbox/messages:markRead", `{"ids": ["`+ids[0]+`"]}`)); c.Marked != 1 || c.Unread != 1 {
			t.Fatalf("markRead %+v", c)
		}
		if c := ok[counts](t, user.call(t, "POST", "/v1/inbox/messages:archive", `{"ids": ["`+ids[1]+`"]}`)); c.Archived != 1 || c.Unread != 0 {
			t.Fatalf("archive %+v, want 1 archived, none unread", c)
		}
		if c := ok[counts](t, notifier.call(t, "POST", "/v1/inbox/messages:markAllRead", `{"user_id": "hal"}`)); c.Marked != 0 {
			t.Fatalf("markAllRead %+v, want nothing left to mark", c)
		}
		if r := user.call(t, "GET", "/v1/inbox/unread-count?user_id=ada", ""); refused(t, r, http.StatusForbidden, codes.PermissionDenied).Message == "" {
			t.Errorf("another user's inbox: %v", r)
		}
	})

	// Every route was exercised above with an effect checked, through the notifier's port;
	// ContactsService's through the contacts service's port as well. A route added to the
	// protos fails this until a subtest calls it.
	run("every route exercised", func(t *testing.T) {
		if ran < defined {
			t.Skip("the check needs every subtest of TestHTTPAPI: -run left some out")
		}
		for _, route := range openAPIRoutes(t, openapi.Document) {
			method, path, _ := strings.Cut(route, " ")
			if !seen.served(notifier.base, method, path) {
				t.Errorf("no subtest called %s through the notifier's port", route)
			}
			if contactsRoute(path) && !seen.served(contacts.base, method, path) {
				t.Errorf("no subtest called %s through the contacts service's port", route)
			}
		}
	})
}

// contactsRoute reports whether an API path is ContactsService's, which the contacts service
// serves too.
func contactsRoute(path string) bool {
	if strings.HasPrefix(path, "/v1/topics/") {
		return !strings.HasSuffix(path, ":send") // SendToTopic is NotificationService's
	}
	for _, prefix := range []string{"/v1/users", "/v1/devices", "/v1/recipients", "/v1/changes", "/v1/suppressions"} {
		if strings.HasPrefix(path, prefix) {
			return true
		}
	}
	return false
}

// httpContacts runs every ContactsService route through api, one of the ports that serve it,
// each with a user of its own whose id needs escaping in a path.
func httpContacts(t *testing.T, s *stack, api jsonAPI) {
	ctx := context.Background()
	id := "org:7 " + api.name + " Zoë"
	other := "org:7 " + api.name + " Yves"
	path := "/v1/users/" + url.PathEscape(id)
	phone := map[string]string{"notifier": "+14155550181", "contacts": "+14155550182"}[api.name]
	token := strings.Repeat(map[string]string{"notifier": "a1", "contacts": "b2"}[api.name], 32)
	type userAnswer struct {
		User jsonUser `json:"user"`
	}

	t.Run("users", func(t *testing.T) {
		// The body is the User itself (body: "user"); the path names it.
		u := ok[userAnswer](t, api.call(t, "PUT", path, `{"email": "zoe@example.com", "phone": "+1 415 555 0180",
  "locale": "pt-BR", "timezone": "Europe/Lisbon"}`))
		if u.User.UserID != id || u.User.Phone != "+14155550180" || u.User.Timezone != "Europe/Lisbon" {
			t.Fatalf("PUT answered %+v, want the user with the phone in E.164", u.User)
		}
		g, err := s.people.GetUser(ctx, &heraldv1.GetUserRequest{UserId: id})
		if err != nil || g.User.Email != "zoe@example.com" {
			t.Fatalf("over gRPC, the user put over HTTP: %v, %v", g, err)
		}
		ok[userAnswer](t, api.call(t, "PUT", "/v1/users/"+url.PathEscape(other), `{"email": "yves@example.com"}`))
		if got := ok[userAnswer](t, api.call(t, "GET", path, "")); got.User != u.User {
			t.Errorf("GET answered %+v, want %+v", got.User, u.User)
		}
		batch := ok[struct {
			Users []jsonUser `json:"users"`
		}](t, api.call(t, "GET", "/v1/users:batchGet?userIds="+url.QueryEscape(id)+"&userIds=nobody&userIds="+url.QueryEscape(other), ""))
		var ids []string
		for _, u := range batch.Users {
			ids = append(ids, u.UserID)
		}
		slices.Sort(ids)
		if want := []string{other, id}; !slices.Equal(ids, want) {
			t.Errorf("batchGet answered users %q, want %q", ids, want)
		}
	})

	t.Run("devices", func(t *testing.T) {
		// The body is the Device itself (body: "device").
		d := ok[struct {
			Device jsonDevice `json:"device"`
		}](t, api.call(t, "POST", path+"/devices", `{"platform": "PLATFORM_IOS", "token": "`+strings.ToUpper(token)+`", "app": "com.example.app"}`))
		if d.Device.UserID != id || d.Device.Token != token || !d.Device.Active || d.Device.Platform != "PLATFORM_IOS" {
			t.Fatalf("RegisterDevice answered %+v", d.Device)
		}
		list := ok[struct {
			Devices []jsonDevice `json:"devices"`
		}](t, api.call(t, "GET", path+"/devices", ""))
		if len(list.Devices) != 1 || list.Devices[0].Token != token || list.Devices[0].App != "com.example.app" {
			t.Fatalf("ListDevices answered %+v", list.Devices)
		}
	})

	t.Run("settings", func(t *testing.T) {
		type settingsAnswer struct {
			Settings   jsonSettings `json:"settings"`
			Categories []struct {
				Name string `json:"name"`
			} `json:"categories"`
			Etag string `json:"etag"`
		}
		first := ok[settingsAnswer](t, api.call(t, "GET", path+"/settings", ""))
		if first.Etag == "" || len(first.Categories) < 3 {
			t.Fatalf("GetSettings answered %+v, want an etag and the categories", first)
		}
		update := func(etag string) jsonReply {
			return api.call(t, "PUT", path+"/settings", `{"settings": {"categories": [{"category": "marketing", "optedOut": true}]},
  "etag": "`+etag+`"}`)
		}
		updated := ok[settingsAnswer](t, update(first.Etag))
		if updated.Etag == "" || updated.Etag == first.Etag {
			t.Fatalf("UpdateSettings answered etag %q after %q, want a new one", updated.Etag, first.Etag)
		}
		refused(t, update(first.Etag), 409, codes.Aborted) // first.Etag is stale now
		now := ok[settingsAnswer](t, api.call(t, "GET", path+"/settings", ""))
		if now.Etag != updated.Etag || len(now.Settings.Categories) != 1 || now.Settings.Categories[0].Category != "marketing" ||
			now.Settings.Categories[0].OptedOut == nil || !*now.Settings.Categories[0].OptedOut {
			t.Fatalf("GetSettings after the update answered %+v", now)
		}
		// The notifier honours them: marketing to the user is skipped on every channel.
		ex := ok[struct {
			Deliveries []struct {
				State  string `json:"state"`
				Reason string `json:"reason"`
			} `json:"deliveries"`
		}](t, jsonAPI{base: "http://" + s.notifier.HTTPAddr(), key: s.key}.call(t, "POST", "/v1/notifications:explain",
			`{"recipient": {"userId": "`+id+`"}, "category": "marketing", "content": {"title": "Sale", "subject": "Sale", "body": "Sale"}}`))
		if len(ex.Deliveries) == 0 {
			t.Fatal("Explain of marketing to the user answered no deliveries")
		}
		for _, d := range ex.Deliveries {
			if d.State != "DELIVERY_STATE_SKIPPED" || d.Reason != "opted_out" {
				t.Errorf("Explain of marketing to the user: %+v, want SKIPPED opted_out", d)
			}
		}
	})

	t.Run("resolve", func(t *testing.T) {
		r := ok[struct {
			Users []struct {
				User     jsonUser     `json:"user"`
				Devices  []jsonDevice `json:"devices"`
				Settings jsonSettings `json:"settings"`
			} `json:"users"`
		}](t, api.call(t, "POST", "/v1/recipients:resolve", `{"userIds": ["`+id+`", "nobody"],
  "targets": [{"channel": "CHANNEL_EMAIL", "address": "x@example.com"}]}`))
		if len(r.Users) != 1 || r.Users[0].User.UserID != id || len(r.Users[0].Devices) != 1 || len(r.Users[0].Settings.Categories) != 1 {
			t.Fatalf("ResolveRecipients answered %+v, want the user with their device and settings", r)
		}
	})

	t.Run("changes and suppressions", func(t *testing.T) {
		type changes struct {
			Keys          []string `json:"keys"`
			NextHorizon   string   `json:"nextHorizon"` // a uint64: a string in JSON
			NextPageToken string   `json:"nextPageToken"`
		}
		start := ok[changes](t, api.call(t, "GET", "/v1/changes", ""))
		if start.NextHorizon == "" || len(start.Keys) != 0 {
			t.Fatalf("ListChanges from horizon 0 answered %+v, want only the current horizon", start)
		}
		ok[userAnswer](t, api.call(t, "PUT", path, `{"email": "zoe@example.com", "phone": "`+phone+`"}`))
		sms(t, s, phone, "STOP")
		var keys []string
		for page := ""; ; {
			c := ok[changes](t, api.call(t, "GET", "/v1/changes?horizon="+start.NextHorizon+"&pageToken="+url.QueryEscape(page), ""))
			keys = append(keys, c.Keys...)
			if page = c.NextPageToken; page == "" {
				break
			}
		}
		for _, want := range []string{"u:" + id, "a:sms:" + phone} {
			if !slices.Contains(keys, want) {
				t.Errorf("ListChanges since %s answered %q, without %q", start.NextHorizon, keys, want)
			}
		}
		var found bool
		for page := ""; !found; {
			p := ok[struct {
				Addresses []struct {
					Channel string `json:"channel"`
					Address string `json:"address"`
				} `json:"addresses"`
				NextPageToken string `json:"nextPageToken"`
			}](t, api.call(t, "GET", "/v1/suppressions?pageSize=2&pageToken="+url.QueryEscape(page), ""))
			for _, a := range p.Addresses {
				found = found || a.Channel == "CHANNEL_SMS" && a.Address == phone
			}
			if page = p.NextPageToken; page == "" {
				break
			}
		}
		if !found {
			t.Errorf("ListSuppressedAddresses does not hold %s after its STOP", phone)
		}
	})

	t.Run("preference link", func(t *testing.T) {
		l := ok[struct {
			URL        string `json:"url"`
			ExpireTime string `json:"expireTime"`
		}](t, api.call(t, "POST", path+":createPreferenceLink", `{"ttl": "3600s"}`))
		exp, err := time.Parse(time.RFC3339Nano, l.ExpireTime)
		if !strings.HasPrefix(l.URL, contactsPublicURL+"/preferences?token=") || err != nil ||
			time.Until(exp) < 59*time.Minute || time.Until(exp) > time.Hour {
			t.Fatalf("createPreferenceLink answered %+v, want a link to the preference page for 1h", l)
		}
		// The link opens the preference page.
		res, err := jsonClient.Get("http://" + s.contacts.HTTPAddr() + strings.TrimPrefix(l.URL, contactsPublicURL))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Errorf("the preference page answered %s", res.Status)
		}
	})

	t.Run("unregister and delete", func(t *testing.T) {
		ok[struct{}](t, api.call(t, "POST", "/v1/devices:unregister", `{"platform": "PLATFORM_IOS", "token": "`+token+`"}`))
		list := ok[struct {
			Devices []jsonDevice `json:"devices"`
		}](t, api.call(t, "GET", path+"/devices?includeInactive=true", ""))
		if len(list.Devices) != 0 {
			t.Fatalf("devices after unregistering: %+v", list.Devices)
		}
		ok[struct{}](t, api.call(t, "DELETE", path, ""))
		refused(t, api.call(t, "GET", path, ""), 404, codes.NotFound)
		if _, err := s.people.GetUser(ctx, &heraldv1.GetUserRequest{UserId: id}); err == nil {
			t.Error("the user deleted over HTTP is still there over gRPC")
		}
		ok[struct{}](t, api.call(t, "DELETE", "/v1/users/"+url.PathEscape(other), ""))
	})
}

// httpSlashInUserID names users whose ids hold '/' in paths. grpc-gateway splits a path at
// %2F as at '/' (runtime.UnescapingModeAllCharacters), so such an id cannot be named in a path,
// and the API refuses a path holding %2F with 400 (such users are reached over gRPC). What must
// never happen is that the request reaches another user: "ann%2Fsettings" would otherwise be a
// call for ann's settings, and a PUT of an empty user "ann/settings" would replace them.
func httpSlashInUserID(t *testing.T, s *stack, apis ...jsonAPI) {
	ctx := context.Background()
	for _, id := range []string{"ann", "ann/x", "ann/settings", "ann/devices"} {
		if _, err := s.people.UpsertUser(ctx, &heraldv1.UpsertUserRequest{User: &heraldv1.User{UserId: id}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.people.RegisterDevice(ctx, &heraldv1.RegisterDeviceRequest{Device: &heraldv1.Device{
		UserId: "ann", Platform: heraldv1.Platform_PLATFORM_IOS, Token: strings.Repeat("c3", 32)}}); err != nil {
		t.Fatal(err)
	}
	updateSettings(t, s, "ann", &heraldv1.Settings{GlobalOptOut: true})
	annSettings := func() string {
		st, err := s.people.GetSettings(ctx, &heraldv1.GetSettingsRequest{UserId: "ann"})
		if err != nil {
			t.Fatal(err)
		}
		return st.Etag
	}
	before := annSettings()
	for _, api := range apis {
		for _, c := range []struct{ method, path, body string }{
			{"GET", "/v1/users/ann%2Fx", ""},
			{"GET", "/v1/users/ann%2fx", ""},
			{"GET", "/v1/users/ann%2Fsettings", ""},
			{"GET", "/v1/users/ann%2Fdevices", ""},
			{"PUT", "/v1/users/ann%2Fsettings", `{}`},
			{"DELETE", "/v1/users/ann%2Fsettings", ""},
			{"POST", "/v1/users/ann%2Fx/devices", `{"platform": "PLATFORM_IOS", "token": "` + strings.Repeat("d4", 32) + `"}`},
			{"POST", "/v1/users/ann%2Fx:createPreferenceLink", `{}`},
		} {
			st := refused(t, api.call(t, c.method, c.path, c.body), 400, codes.InvalidArgument)
			if !strings.Contains(st.Message, "'/'") {
				t.Errorf("%s %s %s: %q, want a message that says why", api.name, c.method, c.path, st.Message)
			}
		}
	}
	if annSettings() != before {
		t.Error("ann's settings changed")
	}
	for id, want := range map[string]int{"ann": 1, "ann/x": 0} {
		if devs, err := s.people.ListDevices(ctx, &heraldv1.ListDevicesRequest{UserId: id}); err != nil || len(devs.Devices) != want {
			t.Errorf("devices of %s: %v, %v; want %d", id, devs, err, want)
		}
	}
}

// httpErrors checks the errors the real services answer, as HTTP statuses and google.rpc.Status.
func httpErrors(t *testing.T, s *stack, notifier, contacts jsonAPI, admin heraldv1.AdminServiceClient) {
	ctx := context.Background()
	t.Run("400 field violations", func(t *testing.T) {
		st := refused(t, notifier.call(t, "POST", "/v1/notifications:send", emailJSON("Ann <ann@example.com>", "Hi")), 400, codes.InvalidArgument)
		if !st.violation("recipient.address.email") {
			t.Errorf("a bad email: %+v, want a violation of recipient.address.email", st)
		}
		for _, api := range []jsonAPI{notifier, contacts} {
			st := refused(t, api.call(t, "POST", "/v1/users/bad-device/devices", `{"platform": "PLATFORM_IOS", "token": "xyz"}`),
				400, codes.InvalidArgument)
			if !st.violation("device.token") {
				t.Errorf("%s: a bad token: %+v, want a violation of device.token", api.base, st)
			}
		}
		st = refused(t, notifier.call(t, "GET", "/v1/notifications/not-a-uuid", ""), 400, codes.InvalidArgument)
		if !st.violation("notification_id") {
			t.Errorf("a malformed id: %+v, want a violation of notification_id", st)
		}
	})
	t.Run("400 unknown field", func(t *testing.T) {
		st := refused(t, notifier.call(t, "POST", "/v1/notifications:send", `{"categroy": "account",`+emailJSON("ann@example.com", "Hi")[1:]),
			400, codes.InvalidArgument)
		if !strings.Contains(st.Message, `"categroy"`) {
			t.Errorf("an unknown JSON field: %q, want it named", st.Message)
		}
		for _, api := range []jsonAPI{notifier, contacts} {
			st := refused(t, api.call(t, "PUT", "/v1/users/typo", `{"emial": "ann@example.com"}`), 400, codes.InvalidArgument)
			if !strings.Contains(st.Message, `"emial"`) {
				t.Errorf("%s: an unknown JSON field: %q, want it named", api.base, st.Message)
			}
		}
		if _, err := s.people.GetUser(ctx, &heraldv1.GetUserRequest{UserId: "typo"}); err == nil {
			t.Error("a user was stored from a refused request")
		}
	})
	t.Run("400 unknown query parameter", func(t *testing.T) {
		st := refused(t, notifier.call(t, "GET", "/v1/templates/http-receipt?versoin=1", ""), 400, codes.InvalidArgument)
		if !strings.Contains(st.Message, `"versoin"`) {
			t.Errorf("an unknown query parameter: %q, want it named", st.Message)
		}
	})
	t.Run("401", func(t *testing.T) {
		for _, c := range []struct {
			api  jsonAPI
			path string
		}{{notifier, "/v1/notifications/" + uuid.NewString()}, {notifier, "/v1/users/ann"}, {contacts, "/v1/users/ann"}} {
			for _, key := range []string{"", "hk_not-a-key", appkey.New().String()} {
				r := c.api.as(key).call(t, "GET", c.path, "")
				refused(t, r, 401, codes.Unauthenticated)
				if got := r.header.Get("WWW-Authenticate"); got != "Bearer" {
					t.Errorf("%v: WWW-Authenticate %q, want Bearer", r, got)
				}
			}
		}
	})
	t.Run("403", func(t *testing.T) {
		noContacts, err := admin.CreateApp(ctx, &heraldv1.CreateAppRequest{Name: "http-no-contacts"})
		if err != nil {
			t.Fatal(err)
		}
		for _, api := range []jsonAPI{notifier, contacts} {
			refused(t, api.as(noContacts.Key).call(t, "GET", "/v1/users/ann", ""), 403, codes.PermissionDenied)
			refused(t, api.as(noContacts.Key).call(t, "PUT", "/v1/users/forbidden", `{"email": "f@example.com"}`), 403, codes.PermissionDenied)
		}
		if _, err := s.people.GetUser(ctx, &heraldv1.GetUserRequest{UserId: "forbidden"}); err == nil {
			t.Error("an app without contacts access stored a user")
		}
		// It may still send.
		ok[jsonSent](t, notifier.as(noContacts.Key).call(t, "POST", "/v1/notifications:send", emailJSON("ivy@example.com", "Hi")))

		mailer, err := admin.CreateApp(ctx, &heraldv1.CreateAppRequest{Name: "http-mailer", AllowedCategories: []string{"marketing"}})
		if err != nil {
			t.Fatal(err)
		}
		refused(t, notifier.as(mailer.Key).call(t, "POST", "/v1/notifications:send", emailJSON("jo@example.com", "Hi")), 403, codes.PermissionDenied)
		ok[jsonSent](t, notifier.as(mailer.Key).call(t, "POST", "/v1/notifications:send",
			strings.Replace(emailJSON("jo@example.com", "Sale"), `"account"`, `"marketing"`, 1)))
	})
	t.Run("404", func(t *testing.T) {
		r := notifier.call(t, "GET", "/v1/notifications/"+uuid.NewString(), "")
		refused(t, r, 404, codes.NotFound)
		if routingError(r) {
			t.Errorf("%v: the router's 404, want the service's", r)
		}
		if r := notifier.call(t, "GET", "/v1/nothing-here", ""); !routingError(r) {
			t.Errorf("%v, want the router's 404", r)
		}
	})
	t.Run("405", func(t *testing.T) {
		// A route served under another method.
		if r := notifier.call(t, "DELETE", "/v1/notifications/"+uuid.NewString(), ""); r.status != http.StatusMethodNotAllowed {
			t.Errorf("%v, want 405 Method Not Allowed", r)
		}
	})
	t.Run("409", func(t *testing.T) {
		key := uuid.NewString()
		ok[jsonSent](t, notifier.call(t, "POST", "/v1/notifications:send", emailJSON("kim@example.com", "One"), "Idempotency-Key", key))
		refused(t, notifier.call(t, "POST", "/v1/notifications:send", emailJSON("kim@example.com", "Two"), "Idempotency-Key", key),
			409, codes.AlreadyExists)
		// ABORTED, a stale settings etag, is checked with the settings above.
	})
	t.Run("413", func(t *testing.T) {
		body := `{"category": "account",` + strings.Repeat(" ", server.MaxMessageSize) + `}`
		for _, api := range []jsonAPI{notifier, contacts} {
			refused(t, api.call(t, "POST", "/v1/recipients:resolve", body), 413, codes.ResourceExhausted)
		}
		refused(t, notifier.call(t, "POST", "/v1/notifications:send", body), 413, codes.ResourceExhausted)
	})
	t.Run("429", func(t *testing.T) {
		// One request per 100 s, so the second is refused whatever the machine's speed.
		slow, err := admin.CreateApp(ctx, &heraldv1.CreateAppRequest{Name: "http-slow", RequestsPerSecond: 0.01, Burst: 1})
		if err != nil {
			t.Fatal(err)
		}
		api := notifier.as(slow.Key)
		ok[jsonSent](t, api.call(t, "POST", "/v1/notifications:send", emailJSON("lu@example.com", "One")))
		r := api.call(t, "POST", "/v1/notifications:send", emailJSON("lu@example.com", "Two"))
		st := refused(t, r, 429, codes.ResourceExhausted)
		var delay time.Duration
		for _, d := range st.Details {
			if d.Type == "type.googleapis.com/google.rpc.RetryInfo" {
				delay, _ = time.ParseDuration(d.RetryDelay)
			}
		}
		if delay <= 0 {
			t.Fatalf("%v: no RetryInfo with a delay", r)
		}
		if got, want := r.header.Get("Retry-After"), strconv.Itoa(int(math.Ceil(delay.Seconds()))); got != want {
			t.Errorf("Retry-After %q, want %q (RetryInfo's %s, rounded up)", got, want, delay)
		}
	})
}

// httpUnderMutualTLS starts notifiers whose gRPC listener takes only callers with a
// certificate: the HTTP/JSON API still works (it calls the services in memory), unless it is
// turned off, when /v1/ is not served at all while gRPC goes on.
func httpUnderMutualTLS(t *testing.T, s *stack) {
	ctx := context.Background()
	p := newPKI(t)
	serverCert, serverKey := p.issue(t, "notifier", true, 2)
	clientCert, clientKey := p.issue(t, "billing", false, 3)
	start := func(disable bool) *notifierd.Daemon {
		d, err := notifierd.Start(ctx, notifierd.Config{
			GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DisableHTTPAPI: disable, DatabaseURL: s.dbURL, NATSURL: s.natsURL,
			ContactsAddr: s.contacts.GRPCAddr(), ContactsKey: s.contactsKey, RepublishAfter: time.Minute, ReconcileInterval: time.Second,
			TLS: tlsconfig.Files{CertFile: serverCert, KeyFile: serverKey, CAFile: p.caFile},
			Log: s.log.With("service", "notifier-mtls"),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(d.Close)
		return d
	}
	withCert, err := tlsconfig.DialOption(tlsconfig.Files{CAFile: p.caFile, CertFile: clientCert, KeyFile: clientKey})
	if err != nil {
		t.Fatal(err)
	}
	grpcNotify := func(d *notifierd.Daemon) heraldv1.NotificationServiceClient {
		conn, err := grpc.NewClient(d.GRPCAddr(), withCert, appkey.Credentials(s.key))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return heraldv1.NewNotificationServiceClient(conn)
	}

	on := start(false)
	api := jsonAPI{base: "http://" + on.HTTPAddr(), key: s.key}
	res := ok[jsonSent](t, api.call(t, "POST", "/v1/notifications:send", emailJSON("mo@example.com", "Over mTLS")))
	if n := waitSettled(t, api, res.NotificationID); n.Deliveries[0].State != "DELIVERY_STATE_SENT" {
		t.Errorf("sent over HTTP to a notifier under mutual TLS: %+v, want SENT", n)
	}
	if got := ok[struct {
		User jsonUser `json:"user"`
	}](t, api.call(t, "PUT", "/v1/users/mtls-user", `{"email": "mo@example.com"}`)); got.User.UserID != "mtls-user" {
		t.Errorf("PUT of a user through a notifier under mutual TLS answered %+v", got)
	}
	if _, err := grpcNotify(on).GetNotification(ctx, &heraldv1.GetNotificationRequest{NotificationId: res.NotificationID}); err != nil {
		t.Errorf("gRPC with a client certificate: %v", err)
	}

	off := start(true)
	offAPI := jsonAPI{base: "http://" + off.HTTPAddr(), key: s.key}
	for _, r := range []jsonReply{
		offAPI.call(t, "POST", "/v1/notifications:send", emailJSON("mo@example.com", "Refused")),
		offAPI.call(t, "GET", "/v1/notifications/"+res.NotificationID, ""),
		offAPI.call(t, "GET", "/v1/users/mtls-user", ""),
		offAPI.call(t, "GET", "/openapi.json", ""),
	} {
		if r.status != 404 {
			t.Errorf("--disable-http-api: %v, want 404", r)
		}
	}
	if r := offAPI.call(t, "GET", "/healthz", ""); r.status != 200 {
		t.Errorf("--disable-http-api: %v, want health still served", r)
	}
	if _, err := grpcNotify(off).GetNotification(ctx, &heraldv1.GetNotificationRequest{NotificationId: res.NotificationID}); err != nil {
		t.Errorf("--disable-http-api: gRPC with a client certificate: %v", err)
	}

	// The contacts service's switch, likewise.
	c, err := contactsd.Start(ctx, contactsd.Config{
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DisableHTTPAPI: true, DatabaseURL: s.dbURL, NATSURL: s.natsURL,
		Log: s.log.With("service", "contacts-no-http"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if r := (jsonAPI{base: "http://" + c.HTTPAddr(), key: s.key}).call(t, "GET", "/v1/users/mtls-user", ""); r.status != 404 {
		t.Errorf("contacts --disable-http-api: %v, want 404", r)
	}
	if _, err := heraldv1.NewContactsServiceClient(dial(t, c.GRPCAddr(), s.key)).GetUser(ctx,
		&heraldv1.GetUserRequest{UserId: "mtls-user"}); err != nil {
		t.Errorf("contacts --disable-http-api: gRPC: %v", err)
	}
}

// runCurlExample runs examples/curl/send.sh against the stack, as its README tells a user to.
func runCurlExample(t *testing.T, s *stack, api jsonAPI) {
	for _, tool := range []string{"bash", "curl", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("examples/curl/send.sh needs %s: install it (apt-get install %s)", tool, tool)
		}
	}
	script := "../examples/curl/send.sh"
	run := func(env ...string) (string, string, error) {
		cmd := exec.Command("bash", script, "nia@example.com", "From curl", "Sent by the curl example.")
		// Only what the script needs: a HERALD_* of the machine running the tests must not leak in.
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}

	out, errOut, err := run("HERALD_API_KEY="+s.key, "HERALD_HTTP_URL="+api.base)
	if err != nil {
		t.Fatalf("send.sh: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
	}
	m := regexp.MustCompile(`(?m)^notification ([0-9a-f-]{36})$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("send.sh printed no notification id:\n%s", out)
	}
	if !regexp.MustCompile(`(?m)^email +sent$`).MatchString(out) {
		t.Errorf("send.sh did not print the email sent:\n%s", out)
	}
	n, err := s.notify.GetNotification(context.Background(), &heraldv1.GetNotificationRequest{NotificationId: m[1]})
	if err != nil {
		t.Fatal(err)
	}
	if d := n.Notification.Deliveries[0]; d.State != heraldv1.DeliveryState_DELIVERY_STATE_SENT || s.fake.Count(d.DeliveryId) != 1 ||
		n.Notification.IdempotencyKey == "" {
		t.Errorf("the notification send.sh sent: %v, want its email SENT once, with an idempotency key", n.Notification)
	}

	if out, errOut, err := run("HERALD_HTTP_URL=" + api.base); err == nil || !strings.Contains(errOut, "dev.env") {
		t.Errorf("send.sh without HERALD_API_KEY: %v, stdout %q, stderr %q; want a failure that says where the key is", err, out, errOut)
	}
	// An error answer stops it with the service's message.
	out, errOut, err = run("HERALD_API_KEY="+appkey.New().String(), "HERALD_HTTP_URL="+api.base)
	if err == nil || out != "" || !regexp.MustCompile(`send.sh: POST /v1/notifications:send: \S`).MatchString(errOut) {
		t.Errorf("send.sh with an unknown key: %v, stdout %q, stderr %q; want a failure with the answer's message", err, out, errOut)
	}
}
