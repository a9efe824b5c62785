package notifier

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/heraldhq/herald/internal/address"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/templates"
)

// FuzzValidate feeds validate requests built from arbitrary strings. validate must not panic;
// what it rejects it rejects as Invalid with field violations; what it accepts holds
// normalised addresses that validate to themselves, text PostgreSQL can store, and content
// within the limits of rendered templates.
func FuzzValidate(f *testing.F) {
	ios := strings.Repeat("ab", 32)
	f.Add("Ann@Example.COM", "+1 (415) 555-0123", ios, strings.ToUpper(ios), "fcm:tok", "account.security", "key-1",
		"Title", "Body", "Subject", "<p>hi</p>", "")
	f.Add("", "", "", "", "", "news", "", "", "b", "", "", "u1")
	f.Add("name@example.com", "", "", "", "", "news", "", "", "b", "", "", "")
	f.Add("", "+14155550123", "", "", "", "news", "", "t", "", "", "", "")
	f.Add("a@b", "+44 (0)20 7946 0018", "xyz", "", " a b ", "News", strings.Repeat("k", 300), "", "", "", "", "")
	f.Add("a@Bücher.DE", "+390612345678", ios+" ", ios, "a:1", "n", "k\x00", "t\xff", "b\x00", "", "", "")
	f.Add("\"a b\"@x.y", "+1 415 555 0123 ext 4", "", "", "", "a.b-c_d", "", "", "", "s", "", "u\x00")
	f.Add("a@b.co", "", "", "", "", "news", "", "", "b", "Hi\r\nBcc: x@y.z", "", "")
	f.Add("a@b.co", "", "", "", "", "news", "", strings.Repeat("t", 256), "b", "", "", "")
	f.Fuzz(func(t *testing.T, email, phone, ios1, ios2, android, category, key, title, body, subject, html, user string) {
		req := &SendRequest{
			IdempotencyKey: key,
			Category:       category,
			Channels:       []delivery.Channel{delivery.Email},
			Content:        &Content{Title: title, Body: body, Subject: subject, HTML: html},
			Data:           map[string]any{"title": title, "list": []any{body, 1.5}},
		}
		if user != "" {
			req.UserID = user
		} else {
			// Empty tokens are left out, so that the fuzzer can vary one address at a time.
			req.Address = &Address{Email: email, Phone: phone}
			for _, tok := range []string{ios1, ios2} {
				if tok != "" {
					req.Address.IOSTokens = append(req.Address.IOSTokens, tok)
				}
			}
			if android != "" {
				req.Address.AndroidTokens = []string{android}
			}
		}
		err := validate(req, time.Now(), templates.Limits{})
		if err != nil {
			var e *errs.Error
			if !errors.As(err, &e) || e.Kind != errs.Invalid || len(e.Fields) == 0 {
				t.Fatalf("validate error %#v is not Invalid with field violations", err)
			}
			for _, fv := range e.Fields {
				if fv.Field == "" || fv.Reason == "" {
					t.Fatalf("empty field violation %+v", fv)
				}
			}
			return
		}

		for _, s := range []string{req.IdempotencyKey, req.UserID, req.Category, title, body, subject, html} {
			if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
				t.Fatalf("accepted %q, which PostgreSQL cannot store", s)
			}
		}
		// Inline content meets the limits a template's rendered parts must meet.
		if err := templates.Check(forChannels(inlineRendered(req.Content), req.Channels), req.Data, templates.Limits{}); err != nil {
			t.Fatalf("accepted content over a limit: %v", err)
		}
		if a := req.Address; a != nil {
			if a.Email != "" {
				if again, err := address.Email(a.Email); err != nil || again != a.Email {
					t.Fatalf("email %q normalised to %q, which validates to %q, %v", email, a.Email, again, err)
				}
			}
			if a.Phone != "" {
				if again, err := address.Phone(a.Phone); err != nil || again != a.Phone {
					t.Fatalf("phone %q normalised to %q, which validates to %q, %v", phone, a.Phone, again, err)
				}
				if !strings.HasPrefix(a.Phone, "+") || strings.ContainsAny(a.Phone, " ()-.") {
					t.Fatalf("phone %q normalised to %q, not E.164", phone, a.Phone)
				}
			}
			for i, tok := range a.IOSTokens {
				if again, err := address.APNsToken(tok); err != nil || again != tok || slices.Index(a.IOSTokens, tok) != i {
					t.Fatalf("ios tokens %q, %q normalised to %q", ios1, ios2, a.IOSTokens)
				}
			}
			for _, tok := range a.AndroidTokens {
				if again, err := address.FCMToken(tok); err != nil || again != tok {
					t.Fatalf("android token %q normalised to %q", android, tok)
				}
			}
		}

		// A normalised request is a fixed point: validating it again accepts it unchanged.
		before := *req
		var addrBefore Address
		if req.Address != nil {
			addrBefore = *req.Address
			addrBefore.IOSTokens = append([]string(nil), req.Address.IOSTokens...)
			addrBefore.AndroidTokens = append([]string(nil), req.Address.AndroidTokens...)
		}
		if err := validate(req, time.Now(), templates.Limits{}); err != nil {
			t.Fatalf("normalised request rejected: %v", err)
		}
		if req.Address != nil {
			a := req.Address
			if a.Email != addrBefore.Email || a.Phone != addrBefore.Phone ||
				strings.Join(a.IOSTokens, ",") != strings.Join(addrBefore.IOSTokens, ",") ||
				strings.Join(a.AndroidTokens, ",") != strings.Join(addrBefore.AndroidTokens, ",") {
				t.Fatalf("second validate changed the address from %+v to %+v", addrBefore, *a)
			}
		}
		if req.UserID != before.UserID || req.Category != before.Category || req.IdempotencyKey != before.IdempotencyKey {
			t.Fatalf("second validate changed the request")
		}
	})
}
