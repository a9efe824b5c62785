package notifier_test

import (
	"context"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/preference"
	"github.com/heraldhq/herald/services/notifier"
)

var (
	_ notifier.Store     = (*fakeStore)(nil)
	_ notifier.Publisher = (*fakePublisher)(nil)
	_ notifier.Directory = (*fakeDirectory)(nil)
)

// fakeStore keeps everything in memory and answers as the postgres store does.
type fakeStore struct {
	mu            sync.Mutex
	notifications []*notifier.Notification
	templates     map[string][]*notifier.Template
	// categories are the known categories; newFakeStore knows the tests' ones.
	categories []preference.Category
	apps       map[uuid.UUID]*notifier.App
	keys       map[string]uuid.UUID
	// createErr, when set, fails CreateNotification.
	createErr error
	// unpublished are the ids passed to Unpublished.
	unpublished []uuid.UUID
	// racer, when set, is a notification that a concurrent Send committed under the same key
	// after this Send looked the key up: NotificationByKey does not see it, CreateNotification
	// does.
	racer *notifier.Notification
	// reconcile answers Reconcile, one batch per call; then it returns nothing.
	reconcile []reconcileAnswer
}

type reconcileAnswer struct {
	pubs []notifier.Publication
	err  error
}

func newFakeStore() *fakeStore {
	s := &fakeStore{}
	for _, name := range []string{"account.security", "news", "orders", "otp", "reminders"} {
		s.categories = append(s.categories, preference.Category{Name: name, DefaultOptIn: true})
	}
	return s
}

func (s *fakeStore) CreateNotification(_ context.Context, n *notifier.Notification) (*notifier.Notification, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.createErr != nil {
		return nil, false, s.createErr
	}
	if n.IdempotencyKey != "" {
		if r := s.racer; r != nil && r.AppID == n.AppID && r.IdempotencyKey == n.IdempotencyKey {
			return r, false, nil
		}
		if prev := s.byKey(n.AppID, n.IdempotencyKey); prev != nil {
			return prev, false, nil
		}
	}
	s.notifications = append(s.notifications, n)
	return n, true, nil
}

func (s *fakeStore) byKey(app uuid.UUID, key string) *notifier.Notification {
	for _, n := range s.notifications {
		if n.AppID == app && n.IdempotencyKey == key {
			return n
		}
	}
	return nil
}

func (s *fakeStore) NotificationByKey(_ context.Context, appID uuid.UUID, key string) (*notifier.Notification, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.byKey(appID, key); n != nil {
		return n, nil
	}
	return nil, errs.E(errs.NotFound, "notification not found")
}

func (s *fakeStore) Notification(_ context.Context, appID, id uuid.UUID) (*notifier.Notification, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.notifications {
		if n.AppID == appID && n.ID == id {
			return n, nil
		}
	}
	return nil, errs.E(errs.NotFound, "notification not found")
}

func (s *fakeStore) stored() []*notifier.Notification {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*notifier.Notification(nil), s.notifications...)
}

func (s *fakeStore) CreateTemplate(_ context.Context, t *notifier.Template, may func(uuid.UUID) error) (*notifier.Template, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.templates == nil {
		s.templates = map[string][]*notifier.Template{}
	}
	if versions := s.templates[t.Name]; len(versions) > 0 && may != nil {
		if err := may(versions[0].AppID); err != nil {
			return nil, err
		}
	}
	out := *t
	out.Version = len(s.templates[t.Name]) + 1
	out.CreatedAt = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	s.templates[t.Name] = append(s.templates[t.Name], &out)
	return &out, nil
}

func (s *fakeStore) Template(_ context.Context, name string, version int) (*notifier.Template, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	vs := s.templates[name]
	switch {
	case len(vs) == 0:
		return nil, errs.E(errs.NotFound, "template %q not found", name)
	case version == 0:
		return vs[len(vs)-1], nil
	case version > len(vs):
		return nil, errs.E(errs.NotFound, "template %q version %d not found", name, version)
	}
	return vs[version-1], nil
}

func (s *fakeStore) Categories(context.Context) ([]preference.Category, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]preference.Category(nil), s.categories...), nil
}

func (s *fakeStore) PutCategory(_ context.Context, c preference.Category) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, x := range s.categories {
		if x.Name == c.Name {
			s.categories[i] = c
			return nil
		}
	}
	s.categories = append(s.categories, c)
	return nil
}

func (s *fakeStore) EraseUser(_ context.Context, userID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.notifications {
		if n.UserID != userID {
			continue
		}
		for _, d := range n.Deliveries {
			d.To, d.Content = "", delivery.Content{}
			if !d.State.Terminal() {
				d.State, d.DueAt = delivery.Canceled, nil
			}
		}
	}
	return nil
}

func (s *fakeStore) CreateApp(_ context.Context, a *notifier.App) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.apps == nil {
		s.apps = map[uuid.UUID]*notifier.App{}
	}
	for _, b := range s.apps {
		if b.Name == a.Name {
			return errs.E(errs.Conflict, "an app named %q already exists", a.Name)
		}
	}
	s.apps[a.ID] = a
	return nil
}

func (s *fakeStore) AddKey(_ context.Context, appID uuid.UUID, keyID string, _ []byte, maxActive int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.apps[appID] == nil {
		return errs.E(errs.NotFound, "app not found")
	}
	active := 0
	for _, a := range s.keys {
		if a == appID {
			active++
		}
	}
	if maxActive > 0 && active >= maxActive {
		return errs.E(errs.FailedPrecondition, "two active keys already")
	}
	if s.keys == nil {
		s.keys = map[string]uuid.UUID{}
	}
	s.keys[keyID] = appID
	return nil
}

func (s *fakeStore) Unpublished(_ context.Context, ids []uuid.UUID, _ time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unpublished = append(s.unpublished, ids...)
	return nil
}

func (s *fakeStore) Reconcile(context.Context, time.Time, time.Duration, int, map[delivery.Channel]time.Time) ([]notifier.Publication, int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.reconcile) == 0 {
		return nil, 0, nil
	}
	a := s.reconcile[0]
	s.reconcile = s.reconcile[1:]
	return a.pubs, 0, a.err
}

// fakePublisher records what it is asked to publish, and fails with err when that is set.
type fakePublisher struct {
	mu      sync.Mutex
	batches [][]notifier.Publication
	err     error
}

func (p *fakePublisher) Publish(_ context.Context, pubs []notifier.Publication) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.batches = append(p.batches, append([]notifier.Publication(nil), pubs...))
	return p.err
}

func (p *fakePublisher) published() [][]notifier.Publication {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([][]notifier.Publication(nil), p.batches...)
}

// fakeDirectory knows a fixed set of users and suppressions, and records what it is asked.
type fakeDirectory struct {
	users map[string]notifier.User
	sups  []preference.Suppression
	err   error

	mu      sync.Mutex
	lookups [][]notifier.Target
}

func (d *fakeDirectory) Resolve(_ context.Context, ids []string, targets []notifier.Target) (*notifier.Recipients, error) {
	d.mu.Lock()
	d.lookups = append(d.lookups, append([]notifier.Target(nil), targets...))
	d.mu.Unlock()
	if d.err != nil {
		return nil, d.err
	}
	out := &notifier.Recipients{Users: map[string]notifier.User{}, Suppressions: d.sups}
	for _, id := range ids {
		if u, ok := d.users[id]; ok {
			out.Users[id] = u
		}
	}
	return out, nil
}

// Dead letters are exercised against the real store (postgres/deadletters_test.go); the fake
// has none.
func (s *fakeStore) DeadLetters(context.Context, notifier.DeadLetterFilter, uuid.UUID, int) ([]notifier.DeadLetter, error) {
	return nil, nil
}

func (s *fakeStore) Redrive(context.Context, notifier.DeadLetterFilter, time.Time, time.Duration) ([]notifier.Publication, error) {
	return nil, nil
}

// Provider events are exercised against the real store (postgres/providerevents_test.go) and
// the webhooks package; the fake records none.
func (s *fakeStore) RecordProviderEvents(context.Context, []notifier.ProviderEvent) ([]notifier.ProviderEvent, error) {
	return nil, nil
}

func (s *fakeStore) MarkProviderEventsAnnounced(context.Context, string, []string) error {
	return nil
}

// Apps and keys beyond creation are exercised against the real store (postgres/apps_test.go).
func (s *fakeStore) UpdateApp(context.Context, *notifier.App) error { return nil }
func (s *fakeStore) Apps(context.Context) ([]notifier.App, error)   { return nil, nil }
func (s *fakeStore) RevokeKey(context.Context, string, time.Time) (notifier.KeyInfo, error) {
	return notifier.KeyInfo{}, errs.E(errs.NotFound, "key not found")
}
func (s *fakeStore) Keys(context.Context, uuid.UUID) ([]notifier.KeyInfo, error) { return nil, nil }

// Cancellation and key release are exercised against the real store (postgres/cancel_test.go).
func (s *fakeStore) ReleaseKey(context.Context, uuid.UUID, string, time.Time) error { return nil }
func (s *fakeStore) Cancel(context.Context, uuid.UUID, uuid.UUID, time.Time) (*notifier.Notification, error) {
	return nil, errs.E(errs.NotFound, "notification not found")
}

// Statistics and engagement are exercised against the real store (e2e).
func (s *fakeStore) DeliveryStats(context.Context, time.Time) ([]notifier.DeliveryStats, error) {
	return nil, nil
}
func (s *fakeStore) DeliveryApp(context.Context, uuid.UUID) (uuid.UUID, error) {
	return uuid.Nil, errs.E(errs.NotFound, "delivery not found")
}
