// Package contactstest is an in-memory contacts.Store for the fuzz targets of the contacts
// service's edges (gRPC, the pages, the events). It answers as the postgres store does and
// records every value reaching it that PostgreSQL would refuse (invalid UTF-8, NUL) or that
// breaks a limit the service promises: validation must have stopped those first.
package contactstest

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/heraldhq/herald/internal/address"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/preference"
	"github.com/heraldhq/herald/services/contacts"
)

var (
	_ contacts.Store     = (*Store)(nil)
	_ contacts.Publisher = (*Store)(nil)
)

// The user every Store starts with, and the categories it knows.
var (
	User = contacts.User{ID: "u1", Email: "ada@example.com", Phone: "+14155550123", Locale: "pt-BR",
		Timezone: "Europe/Lisbon"}
	Categories = []preference.Category{
		{Name: "account", DefaultOptIn: true},
		{Name: "marketing"},
		{Name: "security", Critical: true, DefaultOptIn: true},
	}
)

// Store is an in-memory contacts.Store and contacts.Publisher. The zero value is not ready: use
// New.
type Store struct {
	mu       sync.Mutex
	problems []string
	users    map[string]contacts.User
	devices  map[string]contacts.Device // by token
	settings map[string]*preference.Settings
	versions map[string]contacts.Version // by user; one sequence for every user, as in PostgreSQL
	version  contacts.Version
	sups     []preference.Suppression
	sids     map[string]bool            // SMS keywords applied, by message SID
	subs     map[string]map[string]bool // topic -> subscribed user ids (topics.go)
}

// New returns a Store that holds User.
func New() *Store {
	return &Store{
		users:    map[string]contacts.User{User.ID: User},
		devices:  map[string]contacts.Device{},
		settings: map[string]*preference.Settings{},
		versions: map[string]contacts.Version{},
		sids:     map[string]bool{},
	}
}

// Problems returns what reached the store that must not have.
func (s *Store) Problems() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.problems...)
}

func (s *Store) problem(format string, args ...any) {
	s.problems = append(s.problems, fmt.Sprintf(format, args...))
}

// text records a problem when PostgreSQL cannot store v, or v is over max bytes.
func (s *Store) text(what, v string, max int) {
	switch {
	case !utf8.ValidString(v):
		s.problem("%s is not UTF-8: %q", what, v)
	case strings.IndexByte(v, 0) >= 0:
		s.problem("%s holds a NUL: %q", what, v)
	case len(v) > max:
		s.problem("%s is %d bytes, over %d", what, len(v), max)
	}
}

func (s *Store) id(id string) {
	if id == "" {
		s.problem("empty user id")
	}
	s.text("user id", id, 128)
}

// address records a problem unless a is, normalised, an address of channel ch.
func (s *Store) address(ch delivery.Channel, a string) {
	var norm string
	var err error
	switch ch {
	case delivery.Email:
		norm, err = address.Email(a)
	case delivery.SMS:
		norm, err = address.Phone(a)
	case delivery.IOS:
		norm, err = address.APNsToken(a)
	case delivery.Android:
		norm, err = address.FCMToken(a)
	default:
		s.problem("address on channel %q", ch)
		return
	}
	if err != nil || norm != a {
		s.problem("%s address %q is not normalised (%q, %v)", ch, a, norm, err)
	}
}

func (s *Store) UpsertUser(_ context.Context, u *contacts.User) (*contacts.User, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.id(u.ID)
	if u.Email != "" {
		s.address(delivery.Email, u.Email)
	}
	if u.Phone != "" {
		s.address(delivery.SMS, u.Phone)
	}
	s.text("locale", u.Locale, 35)
	s.text("timezone", u.Timezone, 64)
	out := *u
	out.CreatedAt, out.UpdatedAt = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s.users[u.ID] = out
	return &out, nil
}

func (s *Store) user(id string) (contacts.User, error) {
	s.id(id)
	u, ok := s.users[id]
	if !ok {
		return u, errs.E(errs.NotFound, "user not found")
	}
	return u, nil
}

func (s *Store) User(_ context.Context, id string) (*contacts.User, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, err := s.user(id)
	if err != nil {
		return nil, err
	}
	return &u, nil
}

func (s *Store) DeleteUser(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.id(id)
	delete(s.users, id)
	delete(s.settings, id)
	delete(s.versions, id)
	for _, users := range s.subs {
		delete(users, id)
	}
	return nil
}

func (s *Store) RegisterDevice(_ context.Context, d *contacts.Device) (*contacts.Device, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.user(d.UserID); err != nil {
		return nil, err
	}
	s.address(d.Platform, d.Token)
	s.text("device app", d.App, 256)
	out := *d
	out.Active = true
	s.devices[d.Token] = out
	return &out, nil
}

func (s *Store) UnregisterDevice(_ context.Context, platform delivery.Channel, token string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.address(platform, token)
	delete(s.devices, token)
	return nil
}

func (s *Store) Devices(_ context.Context, userID string, _ bool) ([]contacts.Device, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.user(userID); err != nil {
		return nil, err
	}
	var out []contacts.Device
	for _, d := range s.devices {
		if d.UserID == userID {
			out = append(out, d)
		}
	}
	return out, nil
}

func (s *Store) DeactivateToken(_ context.Context, platform delivery.Channel, token, reason string, _ time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.address(platform, token)
	s.text("reason", reason, 64)
	return nil
}

func (s *Store) Settings(_ context.Context, userID string) (*preference.Settings, contacts.Version, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.user(userID); err != nil {
		return nil, 0, err
	}
	return s.settings[userID], s.versions[userID], nil
}

func (s *Store) UpdateSettings(_ context.Context, userID string, st *preference.Settings, ifVersion contacts.Version) (contacts.Version, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.user(userID); err != nil {
		return 0, err
	}
	if ifVersion < contacts.AnyVersion {
		s.problem("settings version %d", ifVersion)
	}
	if ifVersion != contacts.AnyVersion && ifVersion != s.versions[userID] {
		return 0, contacts.StaleSettings(userID)
	}
	byName := map[string]preference.Category{}
	for _, c := range Categories {
		byName[c.Name] = c
	}
	if field, reason := st.Validate(byName); field != "" {
		s.problem("settings the service must have refused: %s %s", field, reason)
	}
	if b, err := json.Marshal(st); err != nil || strings.Contains(string(b), `\u0000`) {
		s.problem("settings jsonb refuses: %s %v", b, err)
	}
	s.settings[userID] = st
	s.version++
	s.versions[userID] = s.version
	return s.version, nil
}

func (s *Store) suppression(what string, ch delivery.Channel, addr, category string) {
	s.address(ch, addr)
	s.text(what+" category", category, preference.MaxCategoryName)
}

func (s *Store) Suppress(_ context.Context, sup preference.Suppression) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.suppression("suppression", sup.Channel, sup.Address, sup.Category)
	s.text("suppression reason", sup.Reason, 64)
	s.sups = append(s.sups, sup)
	return nil
}

func (s *Store) Unsuppress(_ context.Context, ch delivery.Channel, addr, category string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.suppression("unsuppression", ch, addr, category)
	return nil
}

var messageSID = regexp.MustCompile(`^(SM|MM)[0-9a-fA-F]{32}$`)

func (s *Store) SMSKeyword(_ context.Context, sid, number string, stop bool) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !messageSID.MatchString(sid) {
		s.problem("message SID %q", sid)
	}
	s.address(delivery.SMS, number)
	if s.sids[sid] {
		return false, nil
	}
	s.sids[sid] = true
	if stop {
		s.sups = append(s.sups, preference.Suppression{Channel: delivery.SMS, Address: number, Reason: "stop"})
	}
	return true, nil
}

// Suppressions returns the suppressions recorded so far.
func (s *Store) Suppressions() []preference.Suppression {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]preference.Suppression(nil), s.sups...)
}

func (s *Store) Resolve(_ context.Context, ids []string, targets []contacts.Target) ([]contacts.Resolved, map[contacts.Target][]preference.Suppression, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(ids)+len(targets) > 1000 {
		s.problem("resolve of %d users and %d targets", len(ids), len(targets))
	}
	var out []contacts.Resolved
	for _, id := range ids {
		s.id(id)
		if u, ok := s.users[id]; ok {
			out = append(out, contacts.Resolved{User: &u, Settings: s.settings[id]})
		}
	}
	sups := map[contacts.Target][]preference.Suppression{}
	for _, t := range targets {
		s.text("target address", t.Address, address.MaxFCMTokenBytes)
		sups[t] = nil
	}
	return out, sups, nil
}

func (s *Store) Categories(context.Context) ([]preference.Category, error) {
	return append([]preference.Category(nil), Categories...), nil
}

// Changes implements the change feed: nothing changes behind the cache's back.
func (s *Store) Changes(_ context.Context, horizon uint64) ([]string, uint64, error) {
	return nil, horizon, nil
}

// Horizon implements contacts.Store.
func (s *Store) Horizon(context.Context) (uint64, error) { return 1, nil }

// ChangesPage implements contacts.Store: nothing changes behind the cache's back.
func (s *Store) ChangesPage(_ context.Context, horizon uint64, _ contacts.FeedPosition, maxKeys, _ int) ([]string, *contacts.FeedPosition, uint64, error) {
	if maxKeys < 1 {
		s.mu.Lock()
		s.problem("a page of %d changes", maxKeys)
		s.mu.Unlock()
	}
	return nil, nil, max(horizon, 1), nil
}

// SuppressedAddresses implements contacts.Store.
func (s *Store) SuppressedAddresses(_ context.Context, after *contacts.Target, limit, _ int) ([]contacts.Target, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if limit < 1 || limit > 10_000 {
		s.problem("a page of %d suppressed addresses", limit)
	}
	if after != nil { // any text PostgreSQL can compare: it need not be an address
		s.text("page cursor", after.Address, address.MaxFCMTokenBytes)
	}
	var out []contacts.Target
	for _, sup := range s.sups {
		t := contacts.Target{Channel: sup.Channel, Address: sup.Address}
		if !slices.Contains(out, t) && len(out) < limit {
			out = append(out, t)
		}
	}
	return out, false, nil
}

// UserDeleted implements contacts.Publisher.
func (s *Store) UserDeleted(context.Context, string) error { return nil }
