package workers

import (
	"net/url"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/linktoken"
)

// UnsubscribeLinks makes the List-Unsubscribe links of emails: a signed one-click link to the
// contacts service's /unsubscribe (RFC 8058), and optionally a mailto address (RFC 2369).
type UnsubscribeLinks struct {
	// BaseURL is the contacts service's public URL.
	BaseURL string
	Signer  *linktoken.Signer
	// Mailto, when set, is offered as well, for mail clients without one-click support.
	Mailto string
}

// Apply sets m's unsubscribe links when it is an email of a category users may leave.
func (l *UnsubscribeLinks) Apply(m *Message) {
	if l == nil || m.Channel != delivery.Email || m.Critical {
		return
	}
	c := linktoken.Claims{Purpose: linktoken.Unsubscribe, UserID: m.UserID, Category: m.Category}
	if m.UserID == "" {
		c.Channel, c.Address = string(delivery.Email), m.To
	}
	m.UnsubscribeURL = l.BaseURL + "/unsubscribe?token=" + url.QueryEscape(l.Signer.Sign(c))
	if l.Mailto != "" {
		m.UnsubscribeMailto = "mailto:" + l.Mailto + "?subject=unsubscribe"
	}
}

// ListUnsubscribeHeaders returns the List-Unsubscribe (RFC 2369) and List-Unsubscribe-Post
// (RFC 8058) headers for m, or nil when it has no unsubscribe link. Email senders add them.
func (m *Message) ListUnsubscribeHeaders() map[string]string {
	if m.UnsubscribeURL == "" {
		return nil
	}
	value := "<" + m.UnsubscribeURL + ">"
	if m.UnsubscribeMailto != "" {
		value += ", <" + m.UnsubscribeMailto + ">"
	}
	return map[string]string{
		"List-Unsubscribe":      value,
		"List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
	}
}
