package notifier

import (
	"bytes"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/linktoken"
	"github.com/heraldhq/herald/internal/templates"
)

func tokenSigner(t *testing.T) *linktoken.Signer {
	t.Helper()
	s, err := linktoken.New(linktoken.Key{ID: "k1", Secret: bytes.Repeat([]byte{3}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestUserTokens(t *testing.T) {
	now := time.Date(2026, 12, 7, 4, 0, 0, 0, time.UTC)
	signer := tokenSigner(t)
	tokens := &UserTokens{Signer: signer, Now: func() time.Time { return now }}
	app := appkey.Caller{AppID: uuid.New(), AppName: "shop"}
	smsOnly := appkey.Caller{AppID: uuid.New(), AppName: "sms", AllowedChannels: []delivery.Channel{delivery.SMS}}

	for _, tc := range []struct {
		name   string
		caller appkey.Caller
		user   string
		ttl    time.Duration
		kind   errs.Kind
		expiry time.Duration
	}{
		{"default ttl", app, "ada", 0, 0, time.Hour},
		{"own ttl", app, "ada", 10 * time.Minute, 0, 10 * time.Minute},
		{"longest", app, "ada", MaxUserTokenTTL, 0, MaxUserTokenTTL},
		{"too long", app, "ada", MaxUserTokenTTL + time.Second, errs.Invalid, 0},
		{"too short", app, "ada", time.Second, errs.Invalid, 0},
		{"no user", app, "", 0, errs.Invalid, 0},
		{"app without the inbox", smsOnly, "ada", 0, errs.PermissionDenied, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, exp, err := tokens.Create(tc.caller, tc.user, tc.ttl)
			if errs.KindOf(err) != tc.kind || (tc.kind == 0) != (err == nil) {
				t.Fatalf("Create = %v, want kind %v", err, tc.kind)
			}
			if err != nil {
				return
			}
			if !exp.Equal(now.Add(tc.expiry)) {
				t.Fatalf("expires %s, want %s", exp, now.Add(tc.expiry))
			}
			user, vexp, err := tokens.Verify(tok)
			if err != nil || user != tc.user || !vexp.Equal(exp) {
				t.Fatalf("Verify = %q, %s, %v", user, vexp, err)
			}
			later := &UserTokens{Signer: signer, Now: func() time.Time { return exp }}
			if _, _, err := later.Verify(tok); errs.KindOf(err) != errs.Unauthenticated {
				t.Fatalf("Verify at expiry = %v, want Unauthenticated", err)
			}
		})
	}

	for name, tok := range map[string]string{
		"never expires": signer.Sign(linktoken.Claims{Purpose: linktoken.Inbox, UserID: "ada"}),
		"preferences":   signer.Sign(linktoken.Claims{Purpose: linktoken.Preferences, UserID: "ada", Expires: now.Add(time.Hour).Unix()}),
		"no user":       signer.Sign(linktoken.Claims{Purpose: linktoken.Inbox, Expires: now.Add(time.Hour).Unix()}),
		"garbage":       "a.b.c",
	} {
		if _, _, err := tokens.Verify(tok); errs.KindOf(err) != errs.Unauthenticated {
			t.Errorf("%s: Verify = %v, want Unauthenticated", name, err)
		}
	}
	var off *UserTokens
	if _, _, err := off.Create(app, "ada", 0); errs.KindOf(err) != errs.FailedPrecondition {
		t.Errorf("Create without keys = %v, want FailedPrecondition", err)
	}
}

func TestInboxCallerUser(t *testing.T) {
	app := &appkey.Caller{AppName: "shop"}
	for _, tc := range []struct {
		name      string
		caller    InboxCaller
		requested string
		want      string
		kind      errs.Kind
	}{
		{"token, own implied", InboxCaller{User: "ada"}, "", "ada", 0},
		{"token, own named", InboxCaller{User: "ada"}, "ada", "ada", 0},
		{"token, another user", InboxCaller{User: "ada"}, "bo", "", errs.PermissionDenied},
		{"app names the user", InboxCaller{App: app}, "bo", "bo", 0},
		{"app without a user", InboxCaller{App: app}, "", "", errs.Invalid},
		{"app, user id too long", InboxCaller{App: app}, string(bytes.Repeat([]byte{'x'}, maxUserID+1)), "", errs.Invalid},
	} {
		got, err := tc.caller.user(tc.requested)
		if got != tc.want || errs.KindOf(err) != tc.kind || (tc.kind == 0) != (err == nil) {
			t.Errorf("%s: user(%q) = %q, %v; want %q, kind %v", tc.name, tc.requested, got, err, tc.want, tc.kind)
		}
	}
}

func TestInboxContent(t *testing.T) {
	data := map[string]any{"k": "v"}
	for _, tc := range []struct {
		name        string
		r           templates.Rendered
		title, body string
		ok          bool
	}{
		{"push", templates.Rendered{PushTitle: "T", PushBody: "B", EmailSubject: "S", EmailText: "E"}, "T", "B", true},
		{"email only", templates.Rendered{EmailSubject: "S", EmailHTML: "<p>h</p>", EmailText: "E"}, "S", "E", true},
		{"sms only", templates.Rendered{SMSBody: "text"}, "", "text", true},
		{"nothing", templates.Rendered{EmailHTML: "<p>h</p>"}, "", "", false},
	} {
		c, ok := inboxContent(tc.r, data)
		if ok != tc.ok || c.Title != tc.title || c.Body != tc.body || (ok && c.Data["k"] != "v") {
			t.Errorf("%s: inboxContent = %+v, %v", tc.name, c, ok)
		}
	}
}
