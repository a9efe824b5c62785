// Package protoconv converts between the API's messages (herald.v1) and the domain types that
// several services share: channels, platforms, delivery states, priorities, settings and
// categories.
package protoconv

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/pgtext"
	"github.com/heraldhq/herald/internal/preference"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// SettingsProto turns settings into their API form.
func SettingsProto(st *preference.Settings) *heraldv1.Settings {
	out := &heraldv1.Settings{GlobalOptOut: st.GlobalOptOut, OptedOutChannels: channelsProto(st.OptedOutChannels)}
	for name, cs := range st.Categories {
		out.Categories = append(out.Categories, &heraldv1.CategorySetting{
			Category: name, OptedOut: cs.OptedOut, OptedOutChannels: channelsProto(cs.OptedOutChannels),
		})
	}
	slices.SortFunc(out.Categories, func(a, b *heraldv1.CategorySetting) int { return strings.Compare(a.Category, b.Category) })
	if q := st.QuietHours; q != nil {
		out.QuietHours = &heraldv1.QuietHours{Start: q.Start, End: q.End}
	}
	return out
}

// SettingsDomain turns API settings into the domain's, reporting malformed fields and lists
// over their limits. It converts everything even then: the services read settings the contacts
// service answers with it, and must not lose an opt-out.
func SettingsDomain(in *heraldv1.Settings) (*preference.Settings, error) {
	var v errs.Violations
	st := &preference.Settings{GlobalOptOut: in.GetGlobalOptOut()}
	st.OptedOutChannels = channelsDomain(&v, "settings.opted_out_channels", in.GetOptedOutChannels())
	v.Count("settings.categories", len(in.GetCategories()), preference.MaxCategories)
	for i, cs := range in.GetCategories() {
		if st.Categories == nil {
			st.Categories = map[string]preference.CategorySetting{}
		}
		v.Bytes(fmt.Sprintf("settings.categories[%d].category", i), cs.GetCategory(), preference.MaxCategoryName)
		if _, dup := st.Categories[cs.GetCategory()]; dup {
			v.Add(fmt.Sprintf("settings.categories[%d]", i), "repeats a category")
		}
		st.Categories[cs.GetCategory()] = preference.CategorySetting{
			OptedOut:         cs.OptedOut,
			OptedOutChannels: channelsDomain(&v, fmt.Sprintf("settings.categories[%d].opted_out_channels", i), cs.GetOptedOutChannels()),
		}
	}
	if q := in.GetQuietHours(); q != nil && (q.GetStart() != "" || q.GetEnd() != "") {
		v.Bytes("settings.quiet_hours.start", q.GetStart(), maxClock)
		v.Bytes("settings.quiet_hours.end", q.GetEnd(), maxClock)
		st.QuietHours = &preference.QuietHours{Start: q.GetStart(), End: q.GetEnd()}
	}
	return st, v.Err()
}

// CategoryProto turns a category into its API form.
func CategoryProto(c preference.Category) *heraldv1.Category {
	out := &heraldv1.Category{Name: c.Name, Description: c.Description, Critical: c.Critical,
		DefaultOptIn: c.DefaultOptIn, AllowedChannels: channelsProto(c.AllowedChannels)}
	for _, cp := range c.Caps {
		out.Caps = append(out.Caps, &heraldv1.FrequencyCap{Limit: int32(cp.Limit), Window: durationpb.New(cp.Window),
			Channel: ChannelProto[cp.Channel]})
	}
	out.Fallback = FallbackProto(c.Fallback)
	out.Digest = DigestProto(c.Digest)
	return out
}

// maxClock is the longest quiet hours time: "HH:MM".
const maxClock = len("15:04")

// CategoryDomain turns an API category into the domain's, reporting malformed fields.
func CategoryDomain(in *heraldv1.Category) (preference.Category, error) {
	var v errs.Violations
	c := preference.Category{Name: in.GetName(), Description: in.GetDescription(), Critical: in.GetCritical(),
		DefaultOptIn: in.GetDefaultOptIn()}
	c.AllowedChannels = channelsDomain(&v, "category.allowed_channels", in.GetAllowedChannels())
	if !v.Count("category.caps", len(in.GetCaps()), preference.MaxCaps) {
		return c, v.Err()
	}
	for i, cp := range in.GetCaps() {
		field := fmt.Sprintf("category.caps[%d]", i)
		d := preference.Cap{Limit: int(cp.GetLimit())}
		if cp.GetLimit() <= 0 {
			v.Add(field+".limit", "must be positive")
		}
		if err := cp.GetWindow().CheckValid(); err != nil || cp.GetWindow().AsDuration() < time.Second ||
			cp.GetWindow().AsDuration() > 31*24*time.Hour {
			v.Add(field+".window", "must be between 1s and 31 days")
		} else {
			d.Window = cp.GetWindow().AsDuration()
		}
		if cp.GetChannel() != heraldv1.Channel_CHANNEL_UNSPECIFIED {
			ch, ok := ChannelDomain[cp.GetChannel()]
			if !ok {
				v.Add(field+".channel", "is not a channel")
			}
			d.Channel = ch
		}
		c.Caps = append(c.Caps, d)
	}
	c.Fallback = FallbackDomain(&v, "category.fallback", in.GetFallback())
	c.Digest = DigestDomain(&v, "category.digest", in.GetDigest())
	return c, v.Err()
}

// FallbackDomain turns an API fallback into the domain's (nil for none), recording malformed
// fields under field: unknown or repeated channels, fewer than two, a step timeout out of
// bounds.
func FallbackDomain(v *errs.Violations, field string, in *heraldv1.Fallback) *delivery.Fallback {
	if in == nil {
		return nil
	}
	f := &delivery.Fallback{}
	if n := len(in.GetChannels()); n < 2 {
		v.Add(field+".channels", "needs at least two channels, in the order to try them")
	} else if v.Count(field+".channels", n, len(ChannelDomain)) {
		for i, ch := range in.GetChannels() {
			d, ok := ChannelDomain[ch]
			switch {
			case !ok:
				v.Add(fmt.Sprintf("%s.channels[%d]", field, i), MustBeChannel)
			case slices.Contains(f.Channels, d):
				v.Add(fmt.Sprintf("%s.channels[%d]", field, i), "is repeated")
			default:
				f.Channels = append(f.Channels, d)
			}
		}
	}
	if t := in.GetStepTimeout(); t != nil {
		if err := t.CheckValid(); err != nil || t.AsDuration() < delivery.MinStepTimeout || t.AsDuration() > delivery.MaxStepTimeout {
			v.Add(field+".step_timeout", fmt.Sprintf("must be between %s and %s", delivery.MinStepTimeout, delivery.MaxStepTimeout))
		} else {
			f.StepTimeout = t.AsDuration()
		}
	}
	return f
}

// maxDigestTemplate bounds a digest template's name, as a Send's template name is bounded.
const maxDigestTemplate = 128

// DigestDomain turns an API digest into the domain's (nil for none), recording malformed fields
// under field: neither or a bad window or daily time, no template.
func DigestDomain(v *errs.Violations, field string, in *heraldv1.Digest) *delivery.Digest {
	if in == nil {
		return nil
	}
	g := &delivery.Digest{Template: in.GetTemplate()}
	switch c := in.GetClose().(type) {
	case *heraldv1.Digest_Window:
		w := c.Window
		if err := w.CheckValid(); err != nil || w.AsDuration() < delivery.MinDigestWindow || w.AsDuration() > delivery.MaxDigestWindow {
			v.Add(field+".window", fmt.Sprintf("must be between %s and %s", delivery.MinDigestWindow, delivery.MaxDigestWindow))
		} else {
			g.Window = w.AsDuration()
		}
	case *heraldv1.Digest_DailyAt:
		if _, _, err := delivery.ParseDailyAt(c.DailyAt); err != nil {
			v.Add(field+".daily_at", err.Error())
		} else {
			g.DailyAt = c.DailyAt
		}
	default:
		v.Add(field, "needs a window or a daily_at time")
	}
	switch {
	case g.Template == "":
		v.Add(field+".template", "is required: the stored template that renders the digest")
	case len(g.Template) > maxDigestTemplate || !pgtext.Valid(g.Template):
		v.Add(field+".template", fmt.Sprintf("must be UTF-8 text of at most %d bytes without NUL characters", maxDigestTemplate))
	}
	return g
}

// DigestProto turns a digest into its API form (nil for none).
func DigestProto(g *delivery.Digest) *heraldv1.Digest {
	if g == nil {
		return nil
	}
	out := &heraldv1.Digest{Template: g.Template}
	if g.DailyAt != "" {
		out.Close = &heraldv1.Digest_DailyAt{DailyAt: g.DailyAt}
	} else {
		out.Close = &heraldv1.Digest_Window{Window: durationpb.New(g.Window)}
	}
	return out
}

// FallbackProto turns a fallback into its API form (nil for none).
func FallbackProto(f *delivery.Fallback) *heraldv1.Fallback {
	if f == nil {
		return nil
	}
	out := &heraldv1.Fallback{Channels: channelsProto(f.Channels)}
	if f.StepTimeout > 0 {
		out.StepTimeout = durationpb.New(f.StepTimeout)
	}
	return out
}

func channelsProto(chs []delivery.Channel) []heraldv1.Channel {
	var out []heraldv1.Channel
	for _, ch := range chs {
		out = append(out, ChannelProto[ch])
	}
	return out
}

// channelsDomain converts a list of channels, reporting unknown ones and a list longer than
// there are channels.
func channelsDomain(v *errs.Violations, field string, chs []heraldv1.Channel) []delivery.Channel {
	v.Count(field, len(chs), len(delivery.Channels))
	var out []delivery.Channel
	for i, ch := range chs {
		d, ok := ChannelDomain[ch]
		if !ok {
			v.Add(fmt.Sprintf("%s[%d]", field, i), "is not a channel")
			continue
		}
		out = append(out, d)
	}
	return out
}

// MustBeChannel is the reason a request's channel that is none of the API's channels is
// refused with: it names them all.
var MustBeChannel = func() string {
	names := make([]string, len(delivery.Channels))
	for i, ch := range delivery.Channels {
		names[i] = ChannelProto[ch].String()
	}
	return "must be " + strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}()

// The API's channel and platform enums and the domain's channels.
var (
	ChannelProto = map[delivery.Channel]heraldv1.Channel{
		delivery.IOS:     heraldv1.Channel_CHANNEL_IOS,
		delivery.Android: heraldv1.Channel_CHANNEL_ANDROID,
		delivery.SMS:     heraldv1.Channel_CHANNEL_SMS,
		delivery.Email:   heraldv1.Channel_CHANNEL_EMAIL,
		delivery.Inbox:   heraldv1.Channel_CHANNEL_INBOX,
	}
	ChannelDomain = map[heraldv1.Channel]delivery.Channel{
		heraldv1.Channel_CHANNEL_IOS:     delivery.IOS,
		heraldv1.Channel_CHANNEL_ANDROID: delivery.Android,
		heraldv1.Channel_CHANNEL_SMS:     delivery.SMS,
		heraldv1.Channel_CHANNEL_EMAIL:   delivery.Email,
		heraldv1.Channel_CHANNEL_INBOX:   delivery.Inbox,
	}
	PlatformProto = map[delivery.Channel]heraldv1.Platform{
		delivery.IOS:     heraldv1.Platform_PLATFORM_IOS,
		delivery.Android: heraldv1.Platform_PLATFORM_ANDROID,
	}
	PlatformDomain = map[heraldv1.Platform]delivery.Channel{
		heraldv1.Platform_PLATFORM_IOS:     delivery.IOS,
		heraldv1.Platform_PLATFORM_ANDROID: delivery.Android,
	}
)

// Delivery states and priorities.
var (
	StateProto = map[delivery.State]heraldv1.DeliveryState{
		delivery.Scheduled: heraldv1.DeliveryState_DELIVERY_STATE_SCHEDULED,
		delivery.Waiting:   heraldv1.DeliveryState_DELIVERY_STATE_WAITING,
		delivery.Queued:    heraldv1.DeliveryState_DELIVERY_STATE_QUEUED,
		delivery.Sending:   heraldv1.DeliveryState_DELIVERY_STATE_SENDING,
		delivery.Retrying:  heraldv1.DeliveryState_DELIVERY_STATE_RETRYING,
		delivery.Sent:      heraldv1.DeliveryState_DELIVERY_STATE_SENT,
		delivery.Delivered: heraldv1.DeliveryState_DELIVERY_STATE_DELIVERED,
		delivery.Bounced:   heraldv1.DeliveryState_DELIVERY_STATE_BOUNCED,
		delivery.Skipped:   heraldv1.DeliveryState_DELIVERY_STATE_SKIPPED,
		delivery.Failed:    heraldv1.DeliveryState_DELIVERY_STATE_FAILED,
		delivery.Dead:      heraldv1.DeliveryState_DELIVERY_STATE_DEAD,
		delivery.Expired:   heraldv1.DeliveryState_DELIVERY_STATE_EXPIRED,
		delivery.Canceled:  heraldv1.DeliveryState_DELIVERY_STATE_CANCELED,
		delivery.Digested:  heraldv1.DeliveryState_DELIVERY_STATE_DIGESTED,
	}
	PriorityProto = map[delivery.Priority]heraldv1.Priority{
		delivery.Low:    heraldv1.Priority_PRIORITY_LOW,
		delivery.Normal: heraldv1.Priority_PRIORITY_NORMAL,
		delivery.High:   heraldv1.Priority_PRIORITY_HIGH,
	}
	// PriorityDomain maps PRIORITY_UNSPECIFIED to normal.
	PriorityDomain = map[heraldv1.Priority]delivery.Priority{
		heraldv1.Priority_PRIORITY_UNSPECIFIED: delivery.Normal,
		heraldv1.Priority_PRIORITY_LOW:         delivery.Low,
		heraldv1.Priority_PRIORITY_NORMAL:      delivery.Normal,
		heraldv1.Priority_PRIORITY_HIGH:        delivery.High,
	}
)
