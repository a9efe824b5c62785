package notifier

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/inbox"
	"github.com/heraldhq/herald/internal/linktoken"
	"github.com/heraldhq/herald/internal/templates"
)

// The in-app inbox is the fifth channel (delivery.Inbox). Send plans it as the other channels
// (settings, suppressions, caps and quiet hours apply; its address is the user id, so only user
// recipients have it) with one difference: it is used only when asked for, named in the Send's
// channels or fallback, or in its category's allowed_channels. A category that allows every
// channel (an empty list) does not add it, so Sends written before the inbox existed do what
// they did. The workers store its messages (services/workers/inbox); Inbox below serves them.

// inboxContent is what an inbox message shows: the push title and body, which are written for
// a short notice, else the email's subject and text, else the SMS body. ok is false when the
// rendering has nothing for it.
func inboxContent(r templates.Rendered, data map[string]any) (delivery.Content, bool) {
	title := cmp.Or(r.PushTitle, r.EmailSubject)
	body := cmp.Or(r.PushBody, r.EmailText, r.SMSBody)
	if title == "" && body == "" {
		return delivery.Content{}, false
	}
	return delivery.Content{Title: title, Body: body, Data: data}, true
}

// Bounds of a user token's life.
const (
	DefaultUserTokenTTL = time.Hour
	MinUserTokenTTL     = time.Minute
	MaxUserTokenTTL     = 24 * time.Hour
)

// UserTokens signs and checks the short-lived tokens that let one user's browser call
// InboxService and follow the live feed, without the app key.
type UserTokens struct {
	// Signer holds the link keys (--link-keys); nil turns user tokens off.
	Signer *linktoken.Signer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Create signs a token for userID, valid for ttl (0: DefaultUserTokenTTL). Only apps that may
// use the inbox channel may create them. Errors: Invalid, PermissionDenied, FailedPrecondition
// (no link keys).
func (t *UserTokens) Create(caller appkey.Caller, userID string, ttl time.Duration) (string, time.Time, error) {
	if err := mayUseInbox(caller); err != nil {
		return "", time.Time{}, err
	}
	var v errs.Violations
	checkUser(&v, userID)
	if ttl == 0 {
		ttl = DefaultUserTokenTTL
	}
	if ttl < MinUserTokenTTL || ttl > MaxUserTokenTTL {
		v.Add("ttl", fmt.Sprintf("must be between %s and %s", MinUserTokenTTL, MaxUserTokenTTL))
	}
	if err := v.Err(); err != nil {
		return "", time.Time{}, err
	}
	if t == nil || t.Signer == nil {
		return "", time.Time{}, errs.E(errs.FailedPrecondition, "user tokens are off: the notifier has no --link-keys")
	}
	exp := clock(t.Now).Add(ttl).Truncate(time.Second)
	return t.Signer.Sign(linktoken.Claims{Purpose: linktoken.Inbox, UserID: userID, Expires: exp.Unix()}), exp, nil
}

// Verify returns the user a token is for, and when the token expires. A token that does not verify, is for another
// purpose, has expired or never expires is refused alike. Errors: Unauthenticated.
func (t *UserTokens) Verify(token string) (string, time.Time, error) {
	if t == nil || t.Signer == nil {
		return "", time.Time{}, errs.E(errs.Unauthenticated, "user tokens are off")
	}
	c, err := t.Signer.Verify(token, linktoken.Inbox, clock(t.Now))
	if err != nil || c.Expires == 0 || c.UserID == "" {
		return "", time.Time{}, errs.E(errs.Unauthenticated, "invalid or expired user token")
	}
	return c.UserID, time.Unix(c.Expires, 0), nil
}

func checkUser(v *errs.Violations, userID string) {
	if userID == "" {
		v.Add("user_id", "is required")
		return
	}
	checkLen(v, "user_id", userID, maxUserID)
}

func mayUseInbox(c appkey.Caller) error {
	if len(c.AllowedChannels) > 0 && !slices.Contains(c.AllowedChannels, delivery.Inbox) {
		return errs.E(errs.PermissionDenied, "app %q may not use the inbox channel", c.AppName)
	}
	return nil
}

// InboxCaller is who calls InboxService: an app (with its key) or one user (with a user token).
type InboxCaller struct {
	App  *appkey.Caller
	User string
}

// user returns the inbox a call may reach: the one it names, which a user token must own.
// Errors: Invalid, PermissionDenied.
func (c InboxCaller) user(requested string) (string, error) {
	if c.App == nil {
		if requested != "" && requested != c.User {
			return "", errs.E(errs.PermissionDenied, "a user token reaches its own user's inbox only")
		}
		return c.User, nil
	}
	if err := mayUseInbox(*c.App); err != nil {
		return "", err
	}
	var v errs.Violations
	checkUser(&v, requested)
	if err := v.Err(); err != nil {
		return "", err
	}
	return requested, nil
}

// InboxStore is the inbox as the notifier uses it.
type InboxStore interface {
	inbox.Reader
	inbox.Marker
}

// Opens records an inbox read as its delivery's open (provider events, as TrackEvent does).
type Opens interface {
	RecordProviderEvents(ctx context.Context, events []ProviderEvent) ([]ProviderEvent, error)
}

// Inbox serves users' in-app inboxes.
type Inbox struct {
	Store InboxStore
	Opens Opens
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// InboxList asks for a page of a user's inbox; Cursor is a page token ("" for the first).
type InboxList struct {
	UserID          string
	PageSize        int
	Cursor          string
	Read            inbox.ReadFilter
	Category        string
	IncludeArchived bool
}

// List answers a page of the user's messages, newest first, and the next page's token ("" on
// the last page). Errors: Invalid, PermissionDenied.
func (i *Inbox) List(ctx context.Context, c InboxCaller, l InboxList) ([]inbox.Message, string, error) {
	user, err := c.user(l.UserID)
	if err != nil {
		return nil, "", err
	}
	var v errs.Violations
	before, err := inbox.ParseCursor(l.Cursor)
	if err != nil {
		v.Add("page_token", err.Error())
	}
	if l.PageSize < 0 || l.PageSize > inbox.MaxPage {
		v.Add("page_size", fmt.Sprintf("must be between 0 and %d", inbox.MaxPage))
	}
	if l.Category != "" && !categoryPattern.MatchString(l.Category) {
		v.Add("category", "is not a category name")
	}
	if err := v.Err(); err != nil {
		return nil, "", err
	}
	size := cmp.Or(l.PageSize, inbox.DefaultPage)
	ms, err := i.Store.List(ctx, inbox.Query{UserID: user, Before: before, Limit: size, Read: l.Read,
		Category: l.Category, IncludeArchived: l.IncludeArchived})
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(ms) == size {
		next = inbox.Cursor(ms[len(ms)-1].Seq)
	}
	return ms, next, nil
}

// UnreadCount counts the user's unread, unarchived messages. Errors: Invalid, PermissionDenied.
func (i *Inbox) UnreadCount(ctx context.Context, c InboxCaller, userID string) (int64, error) {
	user, err := c.user(userID)
	if err != nil {
		return 0, err
	}
	return i.Store.UnreadCount(ctx, user)
}

// MarkRead marks the user's messages ids read, each read counting as its delivery's open.
// It answers how many were unread, and the unread count after. Errors: Invalid,
// PermissionDenied.
func (i *Inbox) MarkRead(ctx context.Context, c InboxCaller, userID string, ids []string) (inbox.Change, error) {
	user, uuids, err := i.idsOf(c, userID, ids)
	if err != nil {
		return inbox.Change{}, err
	}
	return i.read(ctx, user, uuids, "")
}

// MarkAllRead marks every unread message of the user read (of category, when set).
// Errors: Invalid, PermissionDenied.
func (i *Inbox) MarkAllRead(ctx context.Context, c InboxCaller, userID, category string) (inbox.Change, error) {
	user, err := c.user(userID)
	if err != nil {
		return inbox.Change{}, err
	}
	if category != "" && !categoryPattern.MatchString(category) {
		return inbox.Change{}, errs.Field("category", "is not a category name")
	}
	return i.read(ctx, user, nil, category)
}

// read records the opens of the user's unread messages among ids (every one, of category, when
// ids is nil), then marks them read. Opens go first and are idempotent (one per delivery, as
// TrackEvent's), so a read that fails half way and is tried again counts each open once and
// loses none.
func (i *Inbox) read(ctx context.Context, user string, ids []uuid.UUID, category string) (inbox.Change, error) {
	now := clock(i.Now)
	total := inbox.Change{}
	for {
		unread, err := i.Store.Unread(ctx, user, ids, category, inbox.MaxIDs)
		if err != nil {
			return inbox.Change{}, err
		}
		if len(unread) > 0 && i.Opens != nil {
			evs := make([]ProviderEvent, len(unread))
			for j, m := range unread {
				evs[j] = engagementEvent(m.ID, Opened, now, `{"engagement":"opened","via":"inbox"}`)
			}
			if _, err := i.Opens.RecordProviderEvents(ctx, evs); err != nil {
				return inbox.Change{}, err
			}
		}
		// Only what was unread is marked, so that no read goes without its open.
		marking := make([]uuid.UUID, len(unread))
		for j, m := range unread {
			marking[j] = m.ID
		}
		c, err := i.Store.MarkRead(ctx, user, marking, now)
		if err != nil {
			return inbox.Change{}, err
		}
		total.Marked, total.Unread = append(total.Marked, c.Marked...), c.Unread
		if ids != nil || len(unread) < inbox.MaxIDs {
			return total, nil
		}
	}
}

// Archive archives the user's messages ids. Errors: Invalid, PermissionDenied.
func (i *Inbox) Archive(ctx context.Context, c InboxCaller, userID string, ids []string) (inbox.Change, error) {
	user, uuids, err := i.idsOf(c, userID, ids)
	if err != nil {
		return inbox.Change{}, err
	}
	return i.Store.Archive(ctx, user, uuids, clock(i.Now))
}

func (i *Inbox) idsOf(c InboxCaller, userID string, ids []string) (string, []uuid.UUID, error) {
	user, err := c.user(userID)
	if err != nil {
		return "", nil, err
	}
	var v errs.Violations
	out := make([]uuid.UUID, 0, len(ids))
	if len(ids) == 0 {
		v.Add("ids", "is required")
	} else if v.Count("ids", len(ids), inbox.MaxIDs) {
		for j, s := range ids {
			id, err := uuid.Parse(s)
			if err != nil {
				v.Add(fmt.Sprintf("ids[%d]", j), "must be a message id (a UUID)")
				continue
			}
			out = append(out, id)
		}
	}
	return user, out, v.Err()
}
