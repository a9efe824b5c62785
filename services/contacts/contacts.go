// Package contacts holds Herald's recipients: who they are, how to reach them (email, phone,
// push devices), what they chose to receive (settings), and which addresses must not be used
// (suppressions: opt-outs made at the address, addresses providers called invalid). The root
// package validates and decides; postgres/ stores it (schema "contacts"), rpc/ serves
// ContactsService, web/ serves the preference page, one-click unsubscribe and the SMS STOP
// webhook, daemon/ wires a running service.
package contacts

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"golang.org/x/text/language"

	"github.com/heraldhq/herald/internal/address"
	"github.com/heraldhq/herald/internal/coherent"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/pgtext"
	"github.com/heraldhq/herald/internal/preference"
	"github.com/heraldhq/herald/internal/templates"
)

// User is a recipient known by an id the calling services chose.
type User struct {
	ID        string
	Email     string
	Phone     string
	Locale    string
	Timezone  string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Device is a push token registered for a user. Platform is delivery.IOS or delivery.Android.
type Device struct {
	UserID            string
	Platform          delivery.Channel
	Token             string
	App               string
	Active            bool
	DeactivatedReason string
	CreatedAt         time.Time
	UpdatedAt         time.Time
}

// Resolved is a user with what decides where their notifications go.
type Resolved struct {
	User     *User
	Devices  []Device // active only
	Settings *preference.Settings
}

// Target is one address on one channel.
type Target struct {
	Channel delivery.Channel
	Address string
}

// Store keeps users, devices, settings and suppressions. Every write also records which users
// and addresses it changed in the change feed, in the same transaction. The postgres package
// implements it.
type Store interface {
	// UpsertUser creates or replaces u's contact data (not its settings or devices).
	UpsertUser(ctx context.Context, u *User) (*User, error)
	// User returns a user, or a NotFound error.
	User(ctx context.Context, id string) (*User, error)
	// DeleteUser erases a user with their devices and settings; an unknown user is not an error.
	DeleteUser(ctx context.Context, id string) error

	// RegisterDevice stores d active for d.UserID, moving it from any other user, and lifts
	// suppressions of its token. Errors: NotFound (user).
	RegisterDevice(ctx context.Context, d *Device) (*Device, error)
	// UnregisterDevice deletes a token; an unknown token is not an error.
	UnregisterDevice(ctx context.Context, platform delivery.Channel, token string) error
	// Devices lists a user's devices. Errors: NotFound (user).
	Devices(ctx context.Context, userID string, includeInactive bool) ([]Device, error)
	// DeactivateToken marks a token invalid (and suppresses it) unless it was registered after
	// since; a zero since always deactivates.
	DeactivateToken(ctx context.Context, platform delivery.Channel, token, reason string, since time.Time) error

	// Settings returns a user's settings (nil when never set) and their version.
	// Errors: NotFound (user).
	Settings(ctx context.Context, userID string) (*preference.Settings, Version, error)
	// UpdateSettings replaces a user's settings, if their version is still ifVersion (whatever
	// it is when ifVersion is AnyVersion), and returns their new version. Errors: NotFound
	// (user), Aborted (StaleSettings: the version is another).
	UpdateSettings(ctx context.Context, userID string, s *preference.Settings, ifVersion Version) (Version, error)

	// Suppress records a suppression; an existing one for the same address and category is
	// replaced.
	Suppress(ctx context.Context, s preference.Suppression) error
	// Unsuppress lifts the opt-out suppressions (not the invalid-address ones) of an address
	// for a category ("" for all).
	Unsuppress(ctx context.Context, ch delivery.Channel, address, category string) error
	// SMSKeyword applies an SMS STOP (stop: suppress number for every category) or START (lift
	// its opt-out) once per Twilio message SID, and reports whether it did: a SID applied
	// before changes nothing.
	SMSKeyword(ctx context.Context, messageSID, number string, stop bool) (bool, error)

	// Resolve reads, in one round trip, the users among ids with their active devices and
	// settings, and the suppressions on every address involved: the targets and the users' own
	// addresses. Every such address appears in the map, with no suppressions if it has none.
	Resolve(ctx context.Context, ids []string, targets []Target) ([]Resolved, map[Target][]preference.Suppression, error)

	// Categories returns the notifier's categories.
	Categories(ctx context.Context) ([]preference.Category, error)

	// Changes reads the change feed (see coherent.Feed).
	Changes(ctx context.Context, horizon uint64) ([]string, uint64, error)
	// Horizon returns where a reader of the change feed that holds nothing yet starts.
	Horizon(ctx context.Context) (uint64, error)
	// ChangesPage reads one page of what Changes would answer: the keys after position from
	// (zero: from the start), in feed order, at most maxKeys of them and about maxBytes (at
	// least one). It returns them, the last one's position when there may be more (nil when
	// not), and the first page's next horizon (see pgdb.ChangesPage).
	ChangesPage(ctx context.Context, horizon uint64, from FeedPosition, maxKeys, maxBytes int) ([]string, *FeedPosition, uint64, error)
	// SuppressedAddresses returns, in (channel, address) order, the addresses after after (nil:
	// from the first) that have at least one suppression: at most max of them and about
	// maxBytes (at least one), and whether there may be more.
	SuppressedAddresses(ctx context.Context, after *Target, max, maxBytes int) ([]Target, bool, error)
}

// Version names one state of a user's settings, so that a read-modify-write of them (the
// preference page, UpdateSettings with an etag) can be a compare-and-swap. Every change gives
// the settings a version no user's settings had before, so a user deleted and created again
// does not bring back a version that an old reader holds; 0 is a user's before their first
// change.
type Version int64

// AnyVersion is the ifVersion of an unconditional UpdateSettings.
const AnyVersion Version = -1

// Etag returns v as the API and the preference page carry it.
func (v Version) Etag() string { return strconv.FormatInt(int64(v), 10) }

// ParseEtag reads an etag that Version.Etag made; "" is AnyVersion. Errors: Invalid, naming
// field.
func ParseEtag(field, etag string) (Version, error) {
	if etag == "" {
		return AnyVersion, nil
	}
	n, err := strconv.ParseInt(etag, 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != etag {
		return 0, errs.Field(field, "is not an etag that GetSettings gave")
	}
	return Version(n), nil
}

// StaleSettings is the error of an UpdateSettings whose ifVersion is not the settings' version.
func StaleSettings(userID string) error {
	return errs.E(errs.Aborted, "the settings of user %q were changed since they were read: "+
		"read them again, apply the change to them and retry", userID)
}

// FeedPosition is a row of the change feed: its transaction id and row id. A page of the feed
// starts after one.
type FeedPosition struct {
	XID uint64
	ID  int64
}

// Publisher tells the other services about facts they must act on.
type Publisher interface {
	// UserDeleted announces that a user was erased, so delivery history keeps only the id.
	UserDeleted(ctx context.Context, userID string) error
}

// Service is the contacts service.
type Service struct {
	Store     Store
	Publisher Publisher
	cache     *coherent.Cache[cached]
}

// cached is a cache entry: a user (nil when the id is unknown) or an address's suppressions.
type cached struct {
	user *Resolved
	sups []preference.Suppression
}

// New returns a Service on store whose lookups are cached coherently with every other replica.
func New(store Store, pub Publisher) *Service {
	return &Service{Store: store, Publisher: pub, cache: coherent.New[cached](store, 100_000, 30*time.Minute)}
}

// Limits on what one call may carry.
const (
	maxUserID   = 128
	maxBatch    = 1000
	maxAppName  = 256
	maxTimezone = 64 // IANA names are at most 30 or so
	// maxAddress is the longest address of any channel: an FCM token.
	maxAddress = address.MaxFCMTokenBytes
)

// UserKey is the change-feed and cache key of a user: stores record it when they change how
// the user resolves (contact data, devices, settings).
func UserKey(id string) string { return "u:" + id }

// AddressKey is the change-feed and cache key of an address: stores record it when they change
// its suppressions.
func AddressKey(ch delivery.Channel, address string) string { return "a:" + string(ch) + ":" + address }

// UpsertUser validates u, normalises its addresses and stores it.
// Errors: Invalid (with field violations).
func (s *Service) UpsertUser(ctx context.Context, u *User) (*User, error) {
	var v errs.Violations
	checkUser(&v, "user", u)
	if err := v.Err(); err != nil {
		return nil, err
	}
	return s.Store.UpsertUser(ctx, u)
}

// checkUser validates u, naming its fields under field, and normalises its addresses.
func checkUser(v *errs.Violations, field string, u *User) {
	checkID(v, field+".user_id", u.ID)
	if u.Email != "" {
		e, err := address.Email(u.Email)
		if err != nil {
			v.Add(field+".email", err.Error())
		}
		u.Email = e
	}
	if u.Phone != "" {
		p, err := address.Phone(u.Phone)
		if err != nil {
			v.Add(field+".phone", err.Error())
		}
		u.Phone = p
	}
	if u.Timezone != "" && v.Bytes(field+".timezone", u.Timezone, maxTimezone) {
		if _, err := time.LoadLocation(u.Timezone); err != nil || u.Timezone == "Local" {
			v.Add(field+".timezone", "must be an IANA time zone such as Europe/Lisbon")
		}
	}
	if u.Locale != "" && v.Bytes(field+".locale", u.Locale, templates.MaxLocaleLen) {
		tag, err := language.Parse(u.Locale)
		if err != nil {
			v.Add(field+".locale", "must be a BCP 47 language tag such as pt-BR")
		} else {
			u.Locale = tag.String()
		}
	}
}

// GetUser returns a user. Errors: Invalid, NotFound.
func (s *Service) GetUser(ctx context.Context, id string) (*User, error) {
	if err := checkUserID("user_id", id); err != nil {
		return nil, err
	}
	return s.Store.User(ctx, id)
}

// DeleteUser erases a user's contact data, devices and settings, and announces it so that the
// notifier erases the addresses from the user's delivery history. It announces even an unknown
// user, so that a retry after a failed announcement completes the erasure. Errors: Invalid,
// Unavailable.
func (s *Service) DeleteUser(ctx context.Context, id string) error {
	if err := checkUserID("user_id", id); err != nil {
		return err
	}
	if err := s.Store.DeleteUser(ctx, id); err != nil {
		return err
	}
	if s.Publisher == nil {
		return nil
	}
	if err := s.Publisher.UserDeleted(ctx, id); err != nil {
		return errs.Wrap(errs.Unavailable, err, "the user is deleted but their delivery history is not yet erased; call DeleteUser again")
	}
	return nil
}

// BatchGetUsers returns the users that exist among ids. Errors: Invalid.
func (s *Service) BatchGetUsers(ctx context.Context, ids []string) ([]*User, error) {
	if err := checkIDs(ids); err != nil {
		return nil, err
	}
	found, err := s.resolve(ctx, ids, nil)
	if err != nil {
		return nil, err
	}
	out := make([]*User, 0, len(found.Users))
	for _, r := range found.Users {
		out = append(out, r.User)
	}
	return out, nil
}

// RegisterDevice validates and stores a device. Errors: Invalid, NotFound (user).
func (s *Service) RegisterDevice(ctx context.Context, d *Device) (*Device, error) {
	var v errs.Violations
	checkID(&v, "device.user_id", d.UserID)
	d.Token = normaliseToken(&v, "device.token", d.Platform, d.Token)
	checkText(&v, "device.app", d.App, maxAppName)
	if err := v.Err(); err != nil {
		return nil, err
	}
	return s.Store.RegisterDevice(ctx, d)
}

// UnregisterDevice removes a token. Errors: Invalid.
func (s *Service) UnregisterDevice(ctx context.Context, platform delivery.Channel, token string) error {
	var v errs.Violations
	token = normaliseToken(&v, "token", platform, token)
	if err := v.Err(); err != nil {
		return err
	}
	return s.Store.UnregisterDevice(ctx, platform, token)
}

// ListDevices lists a user's devices. Errors: Invalid, NotFound.
func (s *Service) ListDevices(ctx context.Context, userID string, includeInactive bool) ([]Device, error) {
	if err := checkUserID("user_id", userID); err != nil {
		return nil, err
	}
	return s.Store.Devices(ctx, userID, includeInactive)
}

func normaliseToken(v *errs.Violations, field string, platform delivery.Channel, token string) string {
	var err error
	switch platform {
	case delivery.IOS:
		token, err = address.APNsToken(token)
	case delivery.Android:
		token, err = address.FCMToken(token)
	default:
		v.Add(field[:len(field)-len("token")]+"platform", "must be PLATFORM_IOS or PLATFORM_ANDROID")
		return token
	}
	if err != nil {
		v.Add(field, err.Error())
	}
	return token
}

// GetSettings returns a user's settings (empty when never set), their version and the
// categories they can refer to. Errors: Invalid, NotFound.
func (s *Service) GetSettings(ctx context.Context, userID string) (*preference.Settings, Version, []preference.Category, error) {
	if err := checkUserID("user_id", userID); err != nil {
		return nil, 0, nil, err
	}
	st, v, err := s.Store.Settings(ctx, userID)
	if err != nil {
		return nil, 0, nil, err
	}
	if st == nil {
		st = &preference.Settings{}
	}
	cats, err := s.Store.Categories(ctx)
	if err != nil {
		return nil, 0, nil, err
	}
	return st, v, cats, nil
}

// UpdateSettings validates and replaces a user's settings if their version is still ifVersion
// (whatever it is for AnyVersion), and returns their new version. Once it returns, every lookup
// on every replica sees them. Errors: Invalid (unknown category, opting out of a critical one,
// malformed quiet hours), NotFound, Aborted (StaleSettings).
func (s *Service) UpdateSettings(ctx context.Context, userID string, st *preference.Settings, ifVersion Version) (Version, error) {
	if err := checkUserID("user_id", userID); err != nil {
		return 0, err
	}
	cats, err := s.Store.Categories(ctx)
	if err != nil {
		return 0, err
	}
	byName := make(map[string]preference.Category, len(cats))
	for _, c := range cats {
		byName[c.Name] = c
	}
	if field, reason := st.Validate(byName); field != "" {
		return 0, errs.Field(field, reason)
	}
	slices.Sort(st.OptedOutChannels)
	st.OptedOutChannels = slices.Compact(st.OptedOutChannels)
	return s.Store.UpdateSettings(ctx, userID, st, ifVersion)
}

// Found is the answer to Resolve.
type Found struct {
	Users        map[string]*Resolved
	Suppressions []preference.Suppression
}

// Resolve returns the users among ids with their active devices and settings, and the
// suppressions on the targets and on the users' addresses. It reads through the coherent cache:
// anything written before the call began is seen. Errors: Invalid, Unavailable.
func (s *Service) Resolve(ctx context.Context, ids []string, targets []Target) (*Found, error) {
	if err := checkIDs(ids); err != nil {
		return nil, err
	}
	if err := checkTargets(len(ids), targets); err != nil {
		return nil, err
	}
	return s.resolve(ctx, ids, targets)
}

// checkTargets checks the targets of a Resolve that also names users: how many there are
// together, and that each address is text that could be an address. Errors: Invalid.
func checkTargets(users int, targets []Target) error {
	var v errs.Violations
	if n := users + len(targets); n > maxBatch {
		v.Add("targets", fmt.Sprintf("at most %d together with user_ids, got %d", maxBatch, n))
		return v.Err()
	}
	for i, t := range targets {
		checkText(&v, fmt.Sprintf("targets[%d].address", i), t.Address, maxAddress)
	}
	return v.Err()
}

func (s *Service) resolve(ctx context.Context, ids []string, targets []Target) (*Found, error) {
	gen, err := s.cache.Sync(ctx)
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "the contacts database is unavailable; try again")
	}
	found := &Found{Users: map[string]*Resolved{}}
	addrs := map[Target]bool{} // every address whose suppressions matter
	var missIDs []string
	for _, id := range ids {
		c, ok := s.cache.Get(UserKey(id))
		if !ok {
			missIDs = append(missIDs, id)
			continue
		}
		if c.user != nil {
			found.Users[id] = c.user
			for _, t := range addressesOf(c.user) {
				addrs[t] = true
			}
		}
	}
	for _, t := range targets {
		addrs[t] = true
	}
	have := map[Target]bool{} // addresses whose suppressions are already in found
	var missAddrs []Target
	for t := range addrs {
		c, ok := s.cache.Get(AddressKey(t.Channel, t.Address))
		if !ok {
			missAddrs = append(missAddrs, t)
			continue
		}
		found.Suppressions = append(found.Suppressions, c.sups...)
		have[t] = true
	}
	if len(missIDs) == 0 && len(missAddrs) == 0 {
		return found, nil
	}
	// The store also returns the suppressions of the fetched users' own addresses.
	users, sups, err := s.Store.Resolve(ctx, missIDs, missAddrs)
	if err != nil {
		return nil, err
	}
	for _, r := range users {
		found.Users[r.User.ID] = &r
		s.cache.Put(gen, UserKey(r.User.ID), cached{user: &r})
	}
	for _, id := range missIDs {
		if _, ok := found.Users[id]; !ok {
			s.cache.Put(gen, UserKey(id), cached{}) // unknown ids are cached too
		}
	}
	for t, list := range sups {
		if !have[t] {
			found.Suppressions = append(found.Suppressions, list...)
			have[t] = true
		}
		s.cache.Put(gen, AddressKey(t.Channel, t.Address), cached{sups: list})
	}
	return found, nil
}

// addressesOf lists the addresses of a user: email, phone and active device tokens.
func addressesOf(r *Resolved) []Target {
	var out []Target
	if r.User.Email != "" {
		out = append(out, Target{delivery.Email, r.User.Email})
	}
	if r.User.Phone != "" {
		out = append(out, Target{delivery.SMS, r.User.Phone})
	}
	for _, d := range r.Devices {
		out = append(out, Target{d.Platform, d.Token})
	}
	return out
}

// Limits on the pages of ListChanges and ListSuppressedAddresses: well under gRPC's 4 MiB
// message limit however long the keys and addresses are.
const (
	maxChangeKeys      = 10_000
	defaultAddressPage = 1_000
	maxAddressPage     = 10_000
	maxPageBytes       = 1 << 20
)

// ChangesCursor is where a page of ListChanges starts: after the row at After, with the next
// horizon the first page of the same read gave.
type ChangesCursor struct {
	Next  uint64
	After FeedPosition
}

// ChangesPage is one page of the change feed.
type ChangesPage struct {
	Keys []string
	// Next is the horizon to read from once this read's last page is read.
	Next uint64
	// More is where the next page starts; nil on the last page.
	More *ChangesCursor
}

// ListChanges returns the keys (UserKey, AddressKey) of what changed in transactions at or
// after horizon, for the caches of the service's callers, one page from from (nil: the first).
// Horizon 0 answers only the current horizon: a reader that holds nothing has nothing to
// forget. Errors: Unavailable.
func (s *Service) ListChanges(ctx context.Context, horizon uint64, from *ChangesCursor) (*ChangesPage, error) {
	if horizon == 0 && from == nil {
		next, err := s.Store.Horizon(ctx)
		if err != nil {
			return nil, err
		}
		return &ChangesPage{Next: next}, nil
	}
	var start FeedPosition
	if from != nil {
		start = from.After
	}
	keys, more, next, err := s.Store.ChangesPage(ctx, horizon, start, maxChangeKeys, maxPageBytes)
	if err != nil {
		return nil, err
	}
	if from != nil {
		next = from.Next // the first page's snapshot is what the whole read answers for
	}
	page := &ChangesPage{Keys: keys, Next: next}
	if more != nil {
		page.More = &ChangesCursor{Next: next, After: *more}
	}
	return page, nil
}

// ListSuppressedAddresses returns, in a fixed order, up to size addresses (0: a default) with
// at least one suppression, after after (nil: from the first), and the last one when there may
// be more. Errors: Invalid (size, after), Unavailable.
func (s *Service) ListSuppressedAddresses(ctx context.Context, size int, after *Target) ([]Target, *Target, error) {
	var v errs.Violations
	if size < 0 || size > maxAddressPage {
		v.Add("page_size", fmt.Sprintf("must be between 0 and %d", maxAddressPage))
	}
	if after != nil {
		if _, err := delivery.ParseChannel(string(after.Channel)); err != nil {
			v.Add("page_token", "is not a page token that ListSuppressedAddresses gave")
		} else {
			checkText(&v, "page_token", after.Address, maxAddress)
		}
	}
	if err := v.Err(); err != nil {
		return nil, nil, err
	}
	if size == 0 {
		size = defaultAddressPage
	}
	addrs, more, err := s.Store.SuppressedAddresses(ctx, after, size, maxPageBytes)
	if err != nil || !more || len(addrs) == 0 {
		return addrs, nil, err
	}
	return addrs, &addrs[len(addrs)-1], nil
}

// Suppress records an opt-out or invalid address (from a provider, a STOP reply, an
// unsubscribe link).
func (s *Service) Suppress(ctx context.Context, sup preference.Suppression) error {
	return s.Store.Suppress(ctx, sup)
}

// Unsuppress lifts an opt-out of an address (a START reply).
func (s *Service) Unsuppress(ctx context.Context, ch delivery.Channel, address, category string) error {
	return s.Store.Unsuppress(ctx, ch, address, category)
}

// SMSKeyword applies a STOP (stop) or START texted from number, once per message: Twilio signs
// its webhook without a time, so a recorded request may be posted again later, and a replayed
// START must not undo the STOP the person sent after it. It reports whether the keyword was
// applied (false: that message was applied before).
func (s *Service) SMSKeyword(ctx context.Context, messageSID, number string, stop bool) (bool, error) {
	return s.Store.SMSKeyword(ctx, messageSID, number, stop)
}

// DeactivateToken applies a provider's verdict that a push token is dead.
func (s *Service) DeactivateToken(ctx context.Context, platform delivery.Channel, token, reason string, since time.Time) error {
	return s.Store.DeactivateToken(ctx, platform, token, reason, since)
}

func checkIDs(ids []string) error {
	var v errs.Violations
	if !v.Count("user_ids", len(ids), maxBatch) {
		return v.Err()
	}
	for i, id := range ids {
		checkID(&v, fmt.Sprintf("user_ids[%d]", i), id)
	}
	return v.Err()
}

func checkUserID(field, id string) error {
	var v errs.Violations
	checkID(&v, field, id)
	return v.Err()
}

func checkID(v *errs.Violations, field, id string) {
	if id == "" {
		v.Add(field, "is required")
		return
	}
	checkText(v, field, id, maxUserID)
}

// checkText records a violation when s is over max bytes, or is text PostgreSQL cannot store
// (invalid UTF-8, NUL).
func checkText(v *errs.Violations, field, s string, max int) {
	if v.Bytes(field, s, max) && !pgtext.Valid(s) {
		v.Add(field, "must be UTF-8 text without NUL characters")
	}
}
