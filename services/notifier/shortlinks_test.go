package notifier_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/templates"
	"github.com/heraldhq/herald/services/notifier"
	"github.com/heraldhq/herald/services/notifier/links"
)

func withLinks(t *testing.T, h *harness) *[]notifier.Link {
	codec, err := links.NewCodec([]byte("a test key of 16+ bytes"))
	if err != nil {
		t.Fatal(err)
	}
	next := int64(1)
	var created []notifier.Link
	h.svc.Links = &notifier.LinkConfig{Codec: codec, BaseURL: "https://h.test", Retention: 24 * 60 * 60 * 1e9,
		IDs: &links.Allocator{Now: h.svc.Now, Reserve: func(context.Context) (int64, error) {
			v := next
			next += links.BlockSize
			return v, nil
		}},
		Created: func(l notifier.Link) { created = append(created, l) }}
	return &created
}

// TestSendShortensLinks: each live delivery gets short links of its own in every part, opted-out
// and non-http links stay, and the links are stored with the notification.
func TestSendShortensLinks(t *testing.T) {
	h := newHarness()
	created := withLinks(t, h)
	_, err := h.templates.CreateTemplate(t.Context(), billing, &notifier.Template{Name: "promo", Parts: templates.Parts{
		PushBody: "Open https://ex.com/p", SMSBody: "Deal: https://ex.com/d?u={{.u}} info {{notrack \"https://ex.com/i\"}}",
		EmailSubject: "Deal", EmailHTML: `<a href="https://ex.com/d">deal</a> <a href="mailto:help@ex.com">help</a> <a data-herald-notrack href="https://ex.com/i">i</a>`,
		EmailText: "Deal: https://ex.com/d",
	}})
	if err != nil {
		t.Fatal(err)
	}
	res := send(t, h, billing, &notifier.SendRequest{
		Address:  &notifier.Address{Email: "a@example.com", Phone: "+14155550123", IOSTokens: []string{iosToken}},
		Category: "otp", Template: &notifier.TemplateRef{Name: "promo"},
		Data: map[string]any{"u": "7", "deeplink": "https://ex.com/app", "n": "x"},
	})
	n := res.Notification
	// The email's HTML and text share their one URL's link.
	if len(n.Links) != 4 || len(*created) != 4 {
		t.Fatalf("%d links, %d reported created; want 4 (ios body and data, sms, email)", len(n.Links), len(*created))
	}
	code := func(s string) string {
		i := strings.Index(s, "https://h.test/l/")
		if i < 0 {
			return ""
		}
		return s[i+len("https://h.test/l/"):][:links.CodeLen]
	}
	var codes []string
	for _, d := range n.Deliveries {
		c := d.Content
		switch d.Channel {
		case delivery.SMS:
			if !strings.HasPrefix(c.Body, "Deal: https://h.test/l/") || !strings.HasSuffix(c.Body, " info https://ex.com/i") {
				t.Errorf("sms body %q", c.Body)
			}
			codes = append(codes, code(c.Body))
		case delivery.Email:
			if !strings.Contains(c.HTML, `<a href="mailto:help@ex.com">help</a> <a href="https://ex.com/i">i</a>`) || code(c.HTML) == "" {
				t.Errorf("email html %q", c.HTML)
			}
			codes = append(codes, code(c.HTML), code(c.Text))
		case delivery.IOS:
			codes = append(codes, code(c.Body), code(c.Data["deeplink"].(string)))
			if c.Data["n"] != "x" {
				t.Errorf("push data %v", c.Data)
			}
		}
	}
	slices.Sort(codes)
	if len(slices.Compact(codes)) != 4 || codes[0] == "" {
		t.Errorf("codes %v: want 4 distinct", codes)
	}
	for _, l := range n.Links {
		if l.NotificationID != n.ID || l.Template != "promo" || l.Category != "otp" || !strings.HasPrefix(l.URL, "https://ex.com/") {
			t.Errorf("link %+v", l)
		}
	}
}

func TestBadLinksAreRefused(t *testing.T) {
	h := newHarness()
	withLinks(t, h)
	long := "https://ex.com/" + strings.Repeat("a", links.MaxURL)
	_, err := h.svc.Send(t.Context(), billing, &notifier.SendRequest{
		Address: &notifier.Address{Phone: "+14155550123"}, Category: "news",
		Content: &notifier.Content{Body: "see " + long},
	})
	if f := fields(err); !slices.Equal(f, []string{"content.body"}) {
		t.Errorf("inline: fields %v (%v), want content.body", f, err)
	}
	_, err = h.templates.CreateTemplate(t.Context(), billing, &notifier.Template{Name: "bad", Parts: templates.Parts{
		EmailSubject: "s", EmailHTML: `<a href="` + long + `">x</a>`}})
	if f := fields(err); !slices.Equal(f, []string{"template.parts.email_html"}) {
		t.Errorf("template: fields %v (%v), want template.parts.email_html", f, err)
	}
	if _, err := h.templates.CreateTemplate(t.Context(), billing, &notifier.Template{Name: "ok", Parts: templates.Parts{
		SMSBody: "go {{.url}}"}}); err != nil {
		t.Fatal(err)
	}
	_, err = h.svc.Send(t.Context(), billing, &notifier.SendRequest{
		Address: &notifier.Address{Phone: "+14155550123"}, Category: "news",
		Template: &notifier.TemplateRef{Name: "ok"}, Data: map[string]any{"url": long},
	})
	if f := fields(err); !slices.Equal(f, []string{"template.sms_body"}) {
		t.Errorf("rendered: fields %v (%v), want template.sms_body", f, err)
	}

	// A short link longer than the link it replaces can push an SMS over its segments.
	h.templates.Limits.SMSSegments = 1
	_, err = h.svc.Send(t.Context(), billing, &notifier.SendRequest{
		Address: &notifier.Address{Phone: "+14155550123"}, Category: "news",
		Content: &notifier.Content{Body: strings.Repeat("x", 140) + " http://a.io"},
	})
	if f := fields(err); !slices.Equal(f, []string{"content.body"}) || !strings.Contains(err.Error(), "with short links") {
		t.Errorf("segments: fields %v (%v), want content.body", f, err)
	}
}
