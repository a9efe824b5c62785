package twiliofake_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	twilio "github.com/twilio/twilio-go"
	"github.com/twilio/twilio-go/client"
	openapi "github.com/twilio/twilio-go/rest/api/v2010"

	"github.com/heraldhq/herald/internal/fakes/twiliofake"
)

const (
	account = "AC0123456789abcdef0123456789abcdef"
	token   = "0123456789abcdef0123456789abcdef"
	keySID  = "SKfedcba9876543210fedcba9876543210"
	secret  = "keysecret0123456789"
	from    = "+15005550006"
	to      = "+14155550123"
	service = "MG0123456789abcdef0123456789abcdef"
)

func start(t *testing.T) (*twiliofake.Fake, string) {
	t.Helper()
	f := twiliofake.New(account, token)
	u := f.Start()
	t.Cleanup(f.Close)
	return f, u
}

// loopbackOnly fails any dial whose resolved address is not loopback.
func loopbackOnly(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("test dialed %s, not loopback", address)
	}
	return nil
}

// rewrite sends every request to the fake, as a Herald sender does for twilio-go, which has no
// base URL option.
type rewrite struct {
	base *url.URL
	next http.RoundTripper
}

func (rw rewrite) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.URL.Scheme, r.URL.Host, r.Host = rw.base.Scheme, rw.base.Host, ""
	return rw.next.RoundTrip(r)
}

// sdk returns twilio-go's Messages API pointed at the fake, authenticated as user.
func sdk(t *testing.T, baseURL, user, pass string) *openapi.ApiService {
	t.Helper()
	base, err := url.Parse(baseURL)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{DialContext: (&net.Dialer{Control: loopbackOnly}).DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	c := &client.Client{
		Credentials: client.NewCredentials(user, pass),
		HTTPClient:  &http.Client{Transport: rewrite{base, tr}, Timeout: 5 * time.Second},
	}
	c.SetAccountSid(account)
	return twilio.NewRestClientWithParams(twilio.ClientParams{Client: c}).Api
}

func params(to, body string) *openapi.CreateMessageParams {
	p := &openapi.CreateMessageParams{}
	p.SetTo(to)
	p.SetFrom(from)
	p.SetBody(body)
	return p
}

var sidPattern = regexp.MustCompile(`^SM[0-9a-f]{32}$`)

func TestAcceptsTheSDKsMessage(t *testing.T) {
	f, u := start(t)
	p := params(to, "your code is 123456")
	p.SetStatusCallback("https://herald.example/twilio/status")
	p.SetValidityPeriod(600)
	msg, err := sdk(t, u, account, token).CreateMessage(p)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Sid == nil || !sidPattern.MatchString(*msg.Sid) {
		t.Fatalf("sid %v", msg.Sid)
	}
	if *msg.Status != "queued" || *msg.To != to || *msg.From != from || *msg.Body != "your code is 123456" ||
		*msg.AccountSid != account || *msg.NumSegments != "1" || *msg.Direction != "outbound-api" {
		t.Errorf("resource %+v", msg)
	}
	if msg.MessagingServiceSid != nil {
		t.Errorf("messaging_service_sid %q, want null", *msg.MessagingServiceSid)
	}
	got := f.Messages()
	if len(got) != 1 {
		t.Fatalf("recorded %d messages", len(got))
	}
	m := got[0]
	if m.SID != *msg.Sid || m.AuthUser != account || m.StatusCallback != "https://herald.example/twilio/status" ||
		m.ValidityPeriod != 600 || m.MessagingServiceSID != "" {
		t.Errorf("recorded %+v", m)
	}
	if f.Count(to, "your code is 123456") != 1 || f.CountTo(to) != 1 || f.Count(to, "other") != 0 {
		t.Error("counts")
	}
}

func TestMessagingService(t *testing.T) {
	f, u := start(t)
	p := &openapi.CreateMessageParams{}
	p.SetTo(to)
	p.SetMessagingServiceSid(service)
	p.SetBody("hi")
	msg, err := sdk(t, u, account, token).CreateMessage(p)
	if err != nil {
		t.Fatal(err)
	}
	if *msg.Status != "accepted" || msg.From != nil || *msg.MessagingServiceSid != service {
		t.Errorf("resource status %v from %v service %v", *msg.Status, msg.From, msg.MessagingServiceSid)
	}
	if m := f.Messages()[0]; m.From != "" || m.MessagingServiceSID != service {
		t.Errorf("recorded %+v", m)
	}
}

func TestAPIKey(t *testing.T) {
	f, u := start(t)
	f.AddAPIKey(keySID, secret)
	if _, err := sdk(t, u, keySID, secret).CreateMessage(params(to, "hi")); err != nil {
		t.Fatal(err)
	}
	if m := f.Messages()[0]; m.AuthUser != keySID || m.AccountSID != account {
		t.Errorf("recorded %+v", m)
	}
	_, err := sdk(t, u, keySID, "wrongsecret").CreateMessage(params(to, "hi"))
	checkRestError(t, err, 401, 20003)
}

func checkRestError(t *testing.T, err error, status, code int) {
	t.Helper()
	var re *client.TwilioRestError
	if !errors.As(err, &re) {
		t.Fatalf("error %v is not a *client.TwilioRestError", err)
	}
	if re.Status != status || re.Code != code {
		t.Errorf("status %d code %d, want %d %d (%s)", re.Status, re.Code, status, code, re.Message)
	}
	if re.MoreInfo != fmt.Sprintf("https://www.twilio.com/docs/errors/%d", code) {
		t.Errorf("more_info %q", re.MoreInfo)
	}
}

// post sends a form to the fake and returns the status, headers and raw body.
func post(t *testing.T, u, path string, form url.Values, user, pass string) (int, http.Header, string) {
	t.Helper()
	st, h, body, err := do(u, path, form, user, pass)
	if err != nil {
		t.Fatal(err)
	}
	return st, h, body
}

func do(u, path string, form url.Values, user, pass string) (int, http.Header, string, error) {
	req, err := http.NewRequest(http.MethodPost, u+path, strings.NewReader(form.Encode()))
	if err != nil {
		return 0, nil, "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, string(b), err
}

var messagesPath = "/2010-04-01/Accounts/" + account + "/Messages.json"

func form(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return v
}

func TestAuthentication(t *testing.T) {
	f, u := start(t)
	f.AddAPIKey(keySID, secret)
	valid := form("To", to, "From", from, "Body", "hi")
	const want = `{"code":20003,"message":"Authenticate","more_info":"https://www.twilio.com/docs/errors/20003","status":401}`
	tests := []struct {
		name, path, user, pass string
	}{
		{"no credentials", messagesPath, "", ""},
		{"wrong token", messagesPath, account, "wrong"},
		{"unknown user", messagesPath, "ACffffffffffffffffffffffffffffffff", token},
		{"key with the account token", messagesPath, keySID, token},
		{"another account in the path", "/2010-04-01/Accounts/ACffffffffffffffffffffffffffffffff/Messages.json", account, token},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, h, body := post(t, u, tt.path, valid, tt.user, tt.pass)
			if st != http.StatusUnauthorized || strings.TrimSpace(body) != want {
				t.Errorf("got %d %s", st, body)
			}
			if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type %q", ct)
			}
		})
	}
	if len(f.Messages()) != 0 {
		t.Error("accepted a message")
	}
}

type twilioError struct {
	Code     int    `json:"code"`
	Message  string `json:"message"`
	MoreInfo string `json:"more_info"`
	Status   int    `json:"status"`
}

func decodeError(t *testing.T, body string) twilioError {
	t.Helper()
	var e twilioError
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("answer %q is not Twilio JSON", body)
	}
	return e
}

func TestValidation(t *testing.T) {
	f, u := start(t)
	long := strings.Repeat("a", twiliofake.MaxBodyChars)
	emoji := strings.Repeat("😀", twiliofake.MaxBodyChars/2)
	tests := []struct {
		name string
		form url.Values
		code int // 0: accepted
	}{
		{"valid", form("To", to, "From", from, "Body", "hi"), 0},
		{"longest body", form("To", to, "From", from, "Body", long), 0},
		{"longest emoji body", form("To", to, "From", from, "Body", emoji), 0},
		{"short code from", form("To", to, "From", "12345", "Body", "hi"), 0},
		{"alphanumeric from", form("To", to, "From", "Herald", "Body", "hi"), 0},
		{"from and service", form("To", to, "From", from, "MessagingServiceSid", service, "Body", "hi"), 0},
		{"media without body", form("To", to, "From", from, "MediaUrl", "https://example.com/a.png"), 0},
		{"no to", form("From", from, "Body", "hi"), 21604},
		{"no from", form("To", to, "Body", "hi"), 21603},
		{"no body", form("To", to, "From", from), 21602},
		{"national to", form("To", "4155550123", "From", from, "Body", "hi"), 21211},
		{"bad from", form("To", to, "From", "not a number!", "Body", "hi"), 21212},
		{"long alphanumeric from", form("To", to, "From", "HeraldAlerts1", "Body", "hi"), 21212},
		{"bad service", form("To", to, "MessagingServiceSid", "MG123", "Body", "hi"), 21705},
		{"relative callback", form("To", to, "From", from, "Body", "hi", "StatusCallback", "/status"), 21609},
		{"body too long", form("To", to, "From", from, "Body", long+"a"), 21617},
		{"emoji body too long", form("To", to, "From", from, "Body", emoji+"😀"), 21617},
		{"validity zero", form("To", to, "From", from, "Body", "hi", "ValidityPeriod", "0"), 21624},
		{"validity too long", form("To", to, "From", from, "Body", "hi", "ValidityPeriod", "36001"), 21624},
		{"validity not a number", form("To", to, "From", from, "Body", "hi", "ValidityPeriod", "1h"), 21624},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(f.Messages())
			st, _, body := post(t, u, messagesPath, tt.form, account, token)
			if tt.code == 0 {
				if st != http.StatusCreated {
					t.Fatalf("status %d %s", st, body)
				}
				if len(f.Messages()) != before+1 {
					t.Error("not recorded")
				}
				return
			}
			e := decodeError(t, body)
			if st != http.StatusBadRequest || e.Code != tt.code || e.Status != 400 || e.Message == "" {
				t.Errorf("got %d %+v, want 400 code %d", st, e, tt.code)
			}
			if len(f.Messages()) != before {
				t.Error("recorded a refused message")
			}
		})
	}
}

func TestInvalidToQuotesTheNumber(t *testing.T) {
	_, u := start(t)
	_, _, body := post(t, u, messagesPath, form("To", "555", "From", from, "Body", "hi"), account, token)
	if e := decodeError(t, body); e.Message != "The 'To' number 555 is not a valid phone number." {
		t.Errorf("message %q", e.Message)
	}
}

func TestFormBodyOnly(t *testing.T) {
	_, u := start(t)
	req, _ := http.NewRequest(http.MethodPost, u+messagesPath, strings.NewReader(`{"To":"`+to+`"}`))
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth(account, token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if e := decodeError(t, string(b)); res.StatusCode != 400 || e.Code != 21604 {
		t.Errorf("JSON body: %d %+v", res.StatusCode, e)
	}
}

func TestMagicNumbers(t *testing.T) {
	_, u := start(t)
	api := sdk(t, u, account, token)
	for number, code := range map[string]int{
		"+15005550001": 21211, "+15005550002": 21612, "+15005550003": 21408,
		"+15005550004": 21610, "+15005550009": 21614,
	} {
		_, err := api.CreateMessage(params(number, "hi"))
		checkRestError(t, err, 400, code)
	}
	for number, code := range map[string]int{"+15005550001": 21212, "+15005550007": 21606, "+15005550008": 21611} {
		p := params(to, "hi")
		p.SetFrom(number)
		_, err := api.CreateMessage(p)
		checkRestError(t, err, 400, code)
	}
}

func TestFailNumber(t *testing.T) {
	f, u := start(t)
	api := sdk(t, u, account, token)
	f.FailNumber(to, 21610)
	for range 2 {
		_, err := api.CreateMessage(params(to, "hi"))
		checkRestError(t, err, 400, 21610)
	}
	if _, err := api.CreateMessage(params("+14155550124", "hi")); err != nil {
		t.Errorf("other number: %v", err)
	}
	f.FailNumber(to, 0)
	if _, err := api.CreateMessage(params(to, "hi")); err != nil {
		t.Errorf("after clearing: %v", err)
	}
	// A per-number answer comes after authentication and validation, as Twilio's do.
	f.FailNumber(to, 21211)
	_, err := sdk(t, u, account, "wrong").CreateMessage(params(to, "hi"))
	checkRestError(t, err, 401, 20003)
}

func TestFail(t *testing.T) {
	f, u := start(t)
	api := sdk(t, u, account, token)
	valid := form("To", to, "From", from, "Body", "hi")

	f.Fail(503, 2)
	for range 2 {
		_, err := api.CreateMessage(params(to, "hi"))
		checkRestError(t, err, 503, 20503)
	}
	if _, err := api.CreateMessage(params(to, "hi")); err != nil {
		t.Fatalf("after two failures: %v", err)
	}

	f.Fail(500, twiliofake.Always)
	for range 3 {
		st, _, body := post(t, u, messagesPath, valid, account, token)
		if e := decodeError(t, body); st != 500 || e.Code != 20500 {
			t.Errorf("always: %d %+v", st, e)
		}
	}
	f.Fail(0, 0)

	f.Fail(502, 1)
	st, h, body := post(t, u, messagesPath, valid, account, token)
	if st != 502 || !strings.HasPrefix(h.Get("Content-Type"), "text/html") || !strings.Contains(body, "502 Bad Gateway") {
		t.Errorf("502: %d %q %s", st, h.Get("Content-Type"), body)
	}

	// A scripted failure comes before authentication, like an answer from Twilio's edge.
	f.Fail(21211, 1)
	st, _, body = post(t, u, messagesPath, valid, "", "")
	if e := decodeError(t, body); st != 400 || e.Code != 21211 || !strings.Contains(e.Message, to) {
		t.Errorf("21211: %d %+v", st, e)
	}
	if n := f.CountTo(to); n != 1 {
		t.Errorf("accepted %d, want 1", n)
	}
}

func TestTooManyRequests(t *testing.T) {
	f, u := start(t)
	valid := form("To", to, "From", from, "Body", "hi")
	f.Fail(20429, 1)
	st, h, body := post(t, u, messagesPath, valid, account, token)
	if e := decodeError(t, body); st != 429 || e.Code != 20429 || e.Status != 429 {
		t.Errorf("got %d %+v", st, e)
	}
	if h.Get("Retry-After") != "" {
		t.Errorf("Retry-After %q by default", h.Get("Retry-After"))
	}
	f.SetRetryAfter(1500 * time.Millisecond)
	f.Fail(429, 1)
	st, h, _ = post(t, u, messagesPath, valid, account, token)
	if st != 429 || h.Get("Retry-After") != "2" {
		t.Errorf("got %d Retry-After %q, want 429 and 2 (rounded up)", st, h.Get("Retry-After"))
	}
}

func TestDrop(t *testing.T) {
	f, u := start(t)
	f.Drop(1)
	if _, _, _, err := do(u, messagesPath, form("To", to, "From", from, "Body", "hi"), account, token); err == nil {
		t.Fatal("dropped request answered")
	}
	if _, err := sdk(t, u, account, token).CreateMessage(params(to, "hi")); err != nil {
		t.Fatalf("after the drop: %v", err)
	}
	if f.CountTo(to) != 1 || f.Requests() != 2 {
		t.Errorf("count %d requests %d, want 1 and 2", f.CountTo(to), f.Requests())
	}
}

func TestDelay(t *testing.T) {
	f, u := start(t)
	f.SetDelay(time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u+messagesPath,
		strings.NewReader(form("To", to, "From", from, "Body", "hi").Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(account, token)
	begin := time.Now()
	if res, err := http.DefaultClient.Do(req); err == nil {
		res.Body.Close()
		t.Fatal("delayed request answered")
	}
	if d := time.Since(begin); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
	f.SetDelay(0)
	if _, err := sdk(t, u, account, token).CreateMessage(params(to, "hi")); err != nil {
		t.Errorf("after SetDelay(0): %v", err)
	}
	if f.CountTo(to) != 1 {
		t.Error("the abandoned request was recorded")
	}
}

func TestOtherPathsAndMethods(t *testing.T) {
	_, u := start(t)
	st, _, body := post(t, u, "/2010-04-01/Accounts/"+account+"/Calls.json", form(), account, token)
	if e := decodeError(t, body); st != 404 || e.Code != 20404 {
		t.Errorf("other path: %d %+v", st, e)
	}
	req, _ := http.NewRequest(http.MethodDelete, u+messagesPath, nil)
	req.SetBasicAuth(account, token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("DELETE: status %d", res.StatusCode)
	}
}

func TestSegments(t *testing.T) {
	f, u := start(t)
	tests := []struct {
		body string
		want string
	}{
		{strings.Repeat("a", 160), "1"},
		{strings.Repeat("a", 161), "2"},
		{strings.Repeat("a", 306), "2"},
		{strings.Repeat("a", 307), "3"},
		{strings.Repeat("€", 80), "1"}, // extension characters take two septets
		{strings.Repeat("€", 81), "2"},
		{strings.Repeat("é", 160), "1"}, // in the GSM alphabet
		{strings.Repeat("ł", 70), "1"},  // not: UCS-2
		{strings.Repeat("ł", 71), "2"},
		{strings.Repeat("😀", 35), "1"},
		{strings.Repeat("😀", 36), "2"},
	}
	api := sdk(t, u, account, token)
	for _, tt := range tests {
		msg, err := api.CreateMessage(params(to, tt.body))
		if err != nil {
			t.Fatal(err)
		}
		if *msg.NumSegments != tt.want {
			t.Errorf("%d × %q: %s segments, want %s", len([]rune(tt.body)), []rune(tt.body)[0], *msg.NumSegments, tt.want)
		}
	}
	if len(f.Messages()) != len(tests) {
		t.Error("not all recorded")
	}
}

func TestHandlerCanBeMounted(t *testing.T) {
	f := twiliofake.New(account, token)
	srv := httptest.NewServer(f.Handler())
	defer srv.Close()
	if st, _, body := post(t, srv.URL, messagesPath, form("To", to, "From", from, "Body", "hi"), account, token); st != 201 {
		t.Fatalf("status %d %s", st, body)
	}
	if f.CountTo(to) != 1 {
		t.Error("not recorded")
	}
}

func TestReset(t *testing.T) {
	f, u := start(t)
	f.AddAPIKey(keySID, secret)
	api := sdk(t, u, keySID, secret)
	if _, err := api.CreateMessage(params(to, "hi")); err != nil {
		t.Fatal(err)
	}
	f.FailNumber(to, 21610)
	f.Fail(500, twiliofake.Always)
	f.Reset()
	if len(f.Messages()) != 0 || f.Requests() != 0 {
		t.Fatal("Reset kept records")
	}
	if _, err := api.CreateMessage(params(to, "hi")); err != nil {
		t.Errorf("after Reset (the key must still work): %v", err)
	}
}

func TestConcurrentSends(t *testing.T) {
	f, u := start(t)
	f.Fail(503, 10)
	api := sdk(t, u, account, token)
	const n = 50
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			number := fmt.Sprintf("+1415555%04d", i)
			for {
				_, err := api.CreateMessage(params(number, "hi"))
				if err == nil {
					return
				}
				var re *client.TwilioRestError
				if !errors.As(err, &re) || re.Status != 503 {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	for i := range n {
		if c := f.Count(fmt.Sprintf("+1415555%04d", i), "hi"); c != 1 {
			t.Errorf("number %d received %d times", i, c)
		}
	}
	if r := f.Requests(); r != n+10 {
		t.Errorf("requests %d, want %d", r, n+10)
	}
}

func TestCountOnly(t *testing.T) {
	f, u := start(t)
	var mu sync.Mutex
	var got []string
	f.CountOnly(func(number string, at time.Time) {
		mu.Lock()
		defer mu.Unlock()
		if at.IsZero() {
			t.Error("zero receive time")
		}
		got = append(got, number)
	})
	if st, _, body := post(t, u, messagesPath, form("To", to, "From", from, "Body", "hi"), account, token); st != http.StatusCreated {
		t.Fatalf("status %d: %s", st, body)
	}
	if st, _, _ := post(t, u, messagesPath, form("To", "+15005550001", "From", from, "Body", "hi"), account, token); st != http.StatusBadRequest {
		t.Fatalf("magic invalid number: status %d, want 400 in CountOnly too", st)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0] != to {
		t.Errorf("onAccept saw %q, want [%s]", got, to)
	}
	if len(f.Messages()) != 0 || f.CountTo(to) != 0 {
		t.Errorf("%d messages kept in CountOnly", len(f.Messages()))
	}
	if f.Accepted() != 1 || f.Requests() != 2 {
		t.Errorf("Accepted %d, Requests %d; want 1 and 2", f.Accepted(), f.Requests())
	}
}
