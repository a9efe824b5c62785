package notifier_test

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/delivery/memstore"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/preference"
	"github.com/heraldhq/herald/services/notifier"
)

var (
	_ notifier.Notifications = (*fakeStore)(nil)
	_ notifier.TemplateStore = (*fakeStore)(nil)
	_ notifier.CategoryStore = (*fakeStore)(nil)
	_ notifier.DigestStore   = (*fakeStore)(nil)
	_ notifier.Publisher     = (*fakePublisher)(nil)
	_ notifier.Directory     = (*fakeDirectory)(nil)
)

// fakeStore keeps what a Sender reads and writes in memory (notifications, and the templates and
// categories they are decided with) and answers as the postgres store does.
type fakeStore struct {
	mu            sync.Mutex
	notifications []*notifier.Notification
	templates     map[string][]*notifier.Template
	// categories are the known categories; newFakeStore knows the tests' ones.
	categories []preference.Category
	// deliveries keeps the notifications' deliveries, as the postgres store keeps them in
	// internal/delivery's store.
	deliveries *memstore.Store
	// createErr, when set, fails CreateNotifications.
	createErr error
	// racer, when set, is a notification that a concurrent Send committed under the same key
	// after this Send looked the key up: from then on NotificationByKey sees it, and
	// CreateNotifications does not create another.
	racer *notifier.Notification
}

func newFakeStore() *fakeStore {
	s := &fakeStore{deliveries: memstore.New()}
	for _, name := range []string{"account.security", "news", "orders", "otp", "reminders"} {
		s.categories = append(s.categories, preference.Category{Name: name, DefaultOptIn: true})
	}
	return s
}

func (s *fakeStore) CreateNotifications(ctx context.Context, ns []*notifier.Notification) ([]bool, []error, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.createErr != nil {
		return nil, nil, s.createErr
	}
	created := make([]bool, len(ns))
	for i, n := range ns {
		if n.IdempotencyKey != "" {
			if s.byKey(n.AppID, n.IdempotencyKey) != nil {
				continue
			}
			if r := s.racer; r != nil && r.AppID == n.AppID && r.IdempotencyKey == n.IdempotencyKey {
				s.notifications = append(s.notifications, r)
				continue
			}
		}
		var ds []delivery.Delivery
		for _, d := range n.Deliveries {
			dd := *d
			dd.AppID = n.AppID // as the postgres store keeps it
			ds = append(ds, dd)
		}
		if err := s.deliveries.Create(ctx, ds); err != nil {
			return nil, nil, err
		}
		for j := range ds { // the digest an item went into, as the postgres store answers
			n.Deliveries[j].DigestID = ds[j].DigestID
		}
		s.notifications = append(s.notifications, n)
		created[i] = true
	}
	return created, nil, nil
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

// Key release is exercised against the real store (postgres/send_test.go), cancellation end to
// end (e2e/policy_test.go).
func (s *fakeStore) ReleaseKey(context.Context, uuid.UUID, string, time.Time) error { return nil }
func (s *fakeStore) Cancel(context.Context, uuid.UUID, uuid.UUID, time.Time) (*notifier.Notification, error) {
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

// fakePublisher records what it is asked to publish, and fails with err when that is set.
type fakePublisher struct {
	mu    sync.Mutex
	calls []map[delivery.Channel][]uuid.UUID
	err   error
}

func (p *fakePublisher) Publish(_ context.Context, byChannel map[delivery.Channel][]uuid.UUID) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := map[delivery.Channel][]uuid.UUID{}
	for ch, ids := range byChannel {
		c[ch] = slices.Clone(ids)
	}
	p.calls = append(p.calls, c)
	return p.err
}

// published returns what each call to Publish was asked to publish.
func (p *fakePublisher) published() []map[delivery.Channel][]uuid.UUID {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.calls)
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

func (s *fakeStore) DueDigests(ctx context.Context, now time.Time, limit int) ([]delivery.DigestRecord, error) {
	return s.deliveries.DueDigests(ctx, now, limit)
}

// CloseDigest closes the digest in the delivery store and keeps the notification that holds
// its delivery, as the postgres store does in one transaction.
func (s *fakeStore) CloseDigest(ctx context.Context, id uuid.UUID, now time.Time,
	build func(delivery.DigestRecord, []delivery.Delivery) (*notifier.Notification, error)) (*notifier.Delivery, error) {
	var n *notifier.Notification
	d, err := s.deliveries.CloseDigest(ctx, id, now, func(g delivery.DigestRecord, items []delivery.Delivery) (*delivery.Delivery, error) {
		var err error
		if n, err = build(g, items); err != nil {
			return nil, err
		}
		return n.Deliveries[0], nil
	})
	if err != nil || d == nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.notifications = append(s.notifications, n)
	return d, nil
}
