// Package preference decides whether a recipient wants a notification: their settings (global,
// per channel, per category, per category and channel, quiet hours), the suppressions on their
// addresses, and the category's own rules (critical categories ignore opt-outs, never invalid
// addresses). The notifier applies it when it accepts a notification and the workers apply it
// again just before they send, so an opt-out also stops deliveries already queued.
package preference

import (
	"fmt"
	"slices"
	"time"

	"github.com/heraldhq/herald/internal/delivery"
)

// Limits on categories and on the lists that name them.
const (
	// MaxCategoryName is the longest category name, in bytes.
	MaxCategoryName = 64
	// MaxCategories is the most categories one list may name: an app's scope, a user's
	// settings.
	MaxCategories = 256
	// MaxCaps is the most frequency caps a category may have: every Send to it takes each one.
	MaxCaps = 8
)

// Category is a kind of notification.
type Category struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Critical categories (e.g. security) cannot be opted out of.
	Critical bool `json:"critical,omitempty"`
	// DefaultOptIn: users receive the category until they opt out; otherwise only after they
	// opt in.
	DefaultOptIn bool `json:"default_opt_in,omitempty"`
	// AllowedChannels are the channels it may be sent on; empty means all.
	AllowedChannels []delivery.Channel `json:"allowed_channels,omitempty"`
	// Caps bound how often one recipient gets it.
	Caps []Cap `json:"caps,omitempty"`
	// Fallback is the chain of a Send that asks for neither channels nor a chain of its own;
	// nil sends on every channel at once.
	Fallback *delivery.Fallback `json:"fallback,omitempty"`
	// Digest collects a Send of the category into the recipient's digest unless the Send asks
	// for a digest of its own; nil sends each at once. Critical categories bypass it.
	Digest *delivery.Digest `json:"digest,omitempty"`
}

// Cap allows at most Limit deliveries of a category per recipient within a sliding Window,
// on Channel only, or across every channel when Channel is empty (one notification counts once).
type Cap struct {
	Limit   int              `json:"limit"`
	Window  time.Duration    `json:"window"`
	Channel delivery.Channel `json:"channel,omitempty"`
}

// Allowed reports whether the category may be sent on ch.
func (c Category) Allowed(ch delivery.Channel) bool {
	return len(c.AllowedChannels) == 0 || slices.Contains(c.AllowedChannels, ch)
}

// Settings are a user's choices. The zero value receives every default-opt-in category.
type Settings struct {
	GlobalOptOut     bool                       `json:"global_opt_out,omitempty"`
	OptedOutChannels []delivery.Channel         `json:"opted_out_channels,omitempty"`
	Categories       map[string]CategorySetting `json:"categories,omitempty"`
	QuietHours       *QuietHours                `json:"quiet_hours,omitempty"`
}

// CategorySetting is a user's choice for one category.
type CategorySetting struct {
	// OptedOut: true opts out, false opts in, nil keeps the category's default.
	OptedOut         *bool              `json:"opted_out,omitempty"`
	OptedOutChannels []delivery.Channel `json:"opted_out_channels,omitempty"`
}

// Reasons a delivery is not sent.
const (
	ReasonRateLimited = "rate_limited"
	ReasonOptedOut    = "opted_out"
	ReasonSuppressed  = "suppressed"
	ReasonInvalid     = "invalid_address"
	// ReasonQuietHours marks a delivery held until the user's quiet hours end.
	ReasonQuietHours = "quiet_hours"
)

// Allows reports whether a user with these settings receives category c on channel ch.
// Critical categories are always allowed.
func (s *Settings) Allows(c Category, ch delivery.Channel) bool {
	if c.Critical {
		return true
	}
	if s == nil {
		return c.DefaultOptIn
	}
	if s.GlobalOptOut || slices.Contains(s.OptedOutChannels, ch) {
		return false
	}
	cs, ok := s.Categories[c.Name]
	if !ok {
		return c.DefaultOptIn
	}
	if slices.Contains(cs.OptedOutChannels, ch) {
		return false
	}
	if cs.OptedOut != nil {
		return !*cs.OptedOut
	}
	return c.DefaultOptIn
}

// Validate checks the settings against the known categories: every category must exist, a
// critical one cannot be opted out of, channels must be known, quiet hours well-formed. It
// returns the first problem as (field, reason) for a field violation, or "" when valid.
func (s *Settings) Validate(categories map[string]Category) (field, reason string) {
	if n := len(s.OptedOutChannels); n > len(delivery.Channels) {
		return "settings.opted_out_channels", fmt.Sprintf("at most %d, got %d", len(delivery.Channels), n)
	}
	if n := len(s.Categories); n > MaxCategories {
		return "settings.categories", fmt.Sprintf("at most %d, got %d", MaxCategories, n)
	}
	for name, cs := range s.Categories {
		// Checked before the names are used in field paths.
		if len(name) > MaxCategoryName {
			return "settings.categories", fmt.Sprintf("at most %d bytes in a category name, got %d", MaxCategoryName, len(name))
		}
		if n := len(cs.OptedOutChannels); n > len(delivery.Channels) {
			return fmt.Sprintf("settings.categories[%s].opted_out_channels", name),
				fmt.Sprintf("at most %d, got %d", len(delivery.Channels), n)
		}
	}
	for i, ch := range s.OptedOutChannels {
		if _, err := delivery.ParseChannel(string(ch)); err != nil {
			return fmt.Sprintf("settings.opted_out_channels[%d]", i), "is not a channel"
		}
	}
	for name, cs := range s.Categories {
		field := fmt.Sprintf("settings.categories[%s]", name)
		c, ok := categories[name]
		if !ok {
			return field, "is not a known category"
		}
		if c.Critical && ((cs.OptedOut != nil && *cs.OptedOut) || len(cs.OptedOutChannels) > 0) {
			return field, "is critical and cannot be opted out of"
		}
		for _, ch := range cs.OptedOutChannels {
			if _, err := delivery.ParseChannel(string(ch)); err != nil {
				return field + ".opted_out_channels", "is not a channel"
			}
		}
	}
	if q := s.QuietHours; q != nil {
		if _, _, err := q.parse(); err != nil {
			return "settings.quiet_hours", err.Error()
		}
	}
	return "", ""
}

// QuietHours is a daily window of local times "HH:MM"; it may cross midnight.
type QuietHours struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

func (q QuietHours) parse() (start, end time.Duration, err error) {
	p := func(s string) (time.Duration, error) {
		t, err := time.Parse("15:04", s)
		if err != nil {
			return 0, fmt.Errorf("times must be HH:MM, 00:00 to 23:59")
		}
		return time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute, nil
	}
	if start, err = p(q.Start); err != nil {
		return 0, 0, err
	}
	if end, err = p(q.End); err != nil {
		return 0, 0, err
	}
	if start == end {
		return 0, 0, fmt.Errorf("start and end must differ")
	}
	return start, end, nil
}

// Until returns the end of the quiet window that contains t, in loc, and true; or false when t
// is outside the window (or the window is malformed).
func (q QuietHours) Until(t time.Time, loc *time.Location) (time.Time, bool) {
	start, end, err := q.parse()
	if err != nil {
		return time.Time{}, false
	}
	local := t.In(loc)
	midnight := time.Date(local.Year(), local.Month(), local.Day(), 0, 0, 0, 0, loc)
	at := func(day time.Time, d time.Duration) time.Time {
		return time.Date(day.Year(), day.Month(), day.Day(), int(d/time.Hour), int(d%time.Hour/time.Minute), 0, 0, loc)
	}
	// Wall-clock time of day, so that a daylight saving change does not shift the window.
	now := time.Duration(local.Hour())*time.Hour + time.Duration(local.Minute())*time.Minute +
		time.Duration(local.Second())*time.Second
	switch {
	case start < end: // same day, e.g. 13:00-15:00
		if now >= start && now < end {
			return at(midnight, end), true
		}
	case now >= start: // crosses midnight, in the evening part
		return at(midnight.AddDate(0, 0, 1), end), true
	case now < end: // crosses midnight, in the morning part
		return at(midnight, end), true
	}
	return time.Time{}, false
}

// Interrupts reports whether quiet hours apply to a channel: push and SMS interrupt, email
// waits in the inbox.
func Interrupts(ch delivery.Channel) bool { return ch != delivery.Email }

// Suppression stops sends to one address.
type Suppression struct {
	Channel delivery.Channel `json:"channel"`
	Address string           `json:"address"`
	// Category is empty for every category.
	Category string `json:"category,omitempty"`
	Reason   string `json:"reason"`
	// Invalid marks an address that cannot receive anything; critical categories respect it.
	Invalid bool `json:"invalid,omitempty"`
}

// Blocked reports whether any suppression stops category c on (ch, address), and why.
func Blocked(sups []Suppression, c Category, ch delivery.Channel, address string) (string, bool) {
	for _, s := range sups {
		if s.Channel != ch || s.Address != address || (s.Category != "" && s.Category != c.Name) {
			continue
		}
		if s.Invalid {
			return ReasonInvalid, true
		}
		if !c.Critical {
			return ReasonSuppressed, true
		}
	}
	return "", false
}
