// Package memstore keeps deliveries in memory with the same transitions as the PostgreSQL store
// (internal/delivery/postgres), for the unit tests of the services that use them. The contract
// suite (internal/delivery/deliverytest) runs against both, so a test that passes here would
// pass on PostgreSQL.
package memstore

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
)

// Store is an in-memory delivery store, safe for concurrent use.
type Store struct {
	// Now is the clock of claims, records and releases (the database's now() in PostgreSQL);
	// nil means time.Now.
	Now func() time.Time
	// ReleaseGrace is as in the PostgreSQL store.
	ReleaseGrace time.Duration

	mu         sync.Mutex
	deliveries map[uuid.UUID]*row
	attempts   map[attemptKey]Attempt
	digests    map[uuid.UUID]*delivery.DigestRecord
}

type row struct {
	delivery.Delivery // without its Content
	// content is the delivery's content encoded, as PostgreSQL keeps it: no caller shares its
	// maps with the store, and what comes back is what JSON decodes to.
	content    []byte
	leaseOwner string
	publishes  int
	published  bool
}

// emptyContent is a delivery.Content with nothing in it, encoded.
const emptyContent = "{}"

type attemptKey struct {
	id             uuid.UUID
	drive, attempt int
}

// Attempt is an entry of the attempt log.
type Attempt struct {
	delivery.Attempt
	Worker string
}

// New returns an empty Store.
func New() *Store {
	return &Store{ReleaseGrace: time.Minute, deliveries: map[uuid.UUID]*row{}, attempts: map[attemptKey]Attempt{},
		digests: map[uuid.UUID]*delivery.DigestRecord{}}
}

func (s *Store) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Create implements the store's Create.
func (s *Store) Create(_ context.Context, ds []delivery.Delivery) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.create(ds)
}

// create is Create with s.mu held.
func (s *Store) create(ds []delivery.Delivery) error {
	// All or nothing, as one COPY.
	rows := make([]*row, len(ds))
	seen := make(map[uuid.UUID]bool, len(ds))
	for i, d := range ds {
		if _, ok := s.deliveries[d.ID]; ok || seen[d.ID] {
			return errs.E(errs.Internal, "delivery %s exists already", d.ID)
		}
		seen[d.ID] = true
		content, err := json.Marshal(d.Content)
		if err != nil {
			return fmt.Errorf("encode content of delivery %s: %w", d.ID, err)
		}
		d.UpdatedAt = d.CreatedAt
		d.Attempts, d.Drive, d.LastError, d.Provider, d.ProviderMessageID, d.SentAt = 0, 0, "", "", "", nil
		d.DueAt, d.Content, d.DigestDeliveryID = clone(d.DueAt), delivery.Content{}, uuid.Nil
		rows[i] = &row{Delivery: d, content: content, published: true}
	}
	s.collect(ds, rows)
	for _, r := range rows {
		s.deliveries[r.ID] = r
	}
	return nil
}

// Unpublished implements the store's Unpublished.
func (s *Store) Unpublished(_ context.Context, ids []uuid.UUID, at time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if r := s.deliveries[id]; r != nil && r.State == delivery.Queued {
			if r.DueAt == nil || at.Before(*r.DueAt) {
				r.DueAt = ptr(at)
			}
			r.published = false
		}
	}
	return nil
}

// Claim implements the store's Claim.
func (s *Store) Claim(_ context.Context, worker string, lease time.Duration, ids []uuid.UUID) ([]delivery.Delivery, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var out []delivery.Delivery
	for _, id := range ids {
		r := s.deliveries[id]
		if r == nil || !r.ExpiresAt.After(now) {
			continue
		}
		due := r.DueAt != nil && !r.DueAt.After(now)
		if !(r.State == delivery.Queued || (r.State == delivery.Retrying || r.State == delivery.Sending) && due) {
			continue
		}
		r.State, r.leaseOwner, r.Attempts = delivery.Sending, worker, r.Attempts+1
		r.DueAt, r.UpdatedAt = ptr(now.Add(lease)), now
		out = append(out, r.claimed())
	}
	return out, nil
}

// Record implements the store's Record.
func (s *Store) Record(_ context.Context, worker string, attempts []delivery.Attempt) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for _, a := range attempts {
		r := s.deliveries[a.DeliveryID]
		lands := r != nil
		if lands && a.State == delivery.Sent {
			lands = !slices.Contains([]delivery.State{delivery.Sent, delivery.Delivered, delivery.Bounced}, r.State)
		} else if lands {
			lands = r.State == delivery.Sending && r.leaseOwner == worker && r.Attempts == a.Attempt && r.Drive == a.Drive
		}
		if lands {
			r.State, r.Reason, r.LastError, r.Provider, r.ProviderMessageID = a.State, a.Reason, a.Error, a.Provider, a.ProviderMessageID
			r.DueAt, r.leaseOwner, r.UpdatedAt = nil, "", now
			if a.State == delivery.Retrying {
				r.DueAt = ptr(minTime(a.RetryAt, r.ExpiresAt))
			}
			if a.State == delivery.Sent {
				r.SentAt = ptr(now)
			}
			if a.State != delivery.Retrying {
				s.markChain(r, now)
			}
		}
		// Logged also for a delivery removed meanwhile: the provider was called.
		k := attemptKey{a.DeliveryID, a.Drive, a.Attempt}
		if _, dup := s.attempts[k]; !dup {
			s.attempts[k] = Attempt{Attempt: a, Worker: worker}
		}
	}
	return nil
}

// Release implements the store's Release.
func (s *Store) Release(_ context.Context, worker string, ids []uuid.UUID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for _, id := range ids {
		if r := s.deliveries[id]; r != nil && r.State == delivery.Sending && r.leaseOwner == worker {
			r.State, r.leaseOwner, r.Attempts = delivery.Queued, "", r.Attempts-1
			r.DueAt, r.UpdatedAt = ptr(minTime(r.ExpiresAt, now.Add(s.ReleaseGrace))), now
		}
	}
	return nil
}

// Reconcile implements the store's Reconcile.
func (s *Store) Reconcile(_ context.Context, now time.Time, republishAfter time.Duration, limit int, held map[delivery.Channel]time.Time) ([]delivery.Due, int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var due []*row
	for _, r := range s.deliveries {
		if r.DueAt != nil && !r.DueAt.After(now) {
			due = append(due, r)
		}
	}
	expired := 0
	var live, steps []*row
	for _, r := range due {
		switch {
		case !r.ExpiresAt.After(now):
			r.State, r.Reason, r.DueAt, r.leaseOwner, r.UpdatedAt = delivery.Expired, delivery.ReasonTTL, nil, "", now
			expired++
		case r.State == delivery.Waiting:
			steps = append(steps, r)
		default:
			live = append(live, r)
		}
	}
	// Waiting steps first, as the PostgreSQL store decides them in a statement of their own.
	slices.SortFunc(steps, func(a, b *row) int { return a.DueAt.Compare(*b.DueAt) })
	var out []delivery.Due
	for _, r := range steps[:min(limit, len(steps))] {
		if s.decideStep(r, now, republishAfter) {
			out = append(out, delivery.Due{ID: r.ID, Channel: r.Channel, OnTime: true})
		}
	}
	if len(out) == limit {
		return out, expired, nil
	}
	limit -= len(out)
	slices.SortFunc(live, func(a, b *row) int { return a.DueAt.Compare(*b.DueAt) })
	for _, r := range live[:min(limit, len(live))] {
		since, hasHeld := held[r.Channel]
		isHeld := r.State == delivery.Queued && r.published && hasHeld && !r.UpdatedAt.Before(since)
		onTime := r.State == delivery.Scheduled || r.State == delivery.Retrying
		switch {
		case isHeld:
			r.DueAt = ptr(minTime(r.ExpiresAt, now.Add(republishAfter)))
		default:
			r.DueAt = ptr(minTime(r.ExpiresAt, now.Add(time.Duration(float64(republishAfter)*math.Pow(2, float64(min(r.publishes, 6)))))))
			if !onTime {
				r.publishes++
			}
			r.UpdatedAt, r.published = now, true
		}
		r.State, r.leaseOwner = delivery.Queued, ""
		out = append(out, delivery.Due{ID: r.ID, Channel: r.Channel, OnTime: onTime, Held: isHeld})
	}
	return out, expired, nil
}

// Cancel implements the store's Cancel.
func (s *Store) Cancel(_ context.Context, notificationID uuid.UUID, at time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.deliveries {
		if r.NotificationID == notificationID && (r.State == delivery.Scheduled || r.State == delivery.Waiting || r.State == delivery.Queued || r.State == delivery.Retrying) {
			r.State, r.Reason, r.DueAt, r.UpdatedAt = delivery.Canceled, delivery.ReasonCanceled, nil, at
			n++
		}
	}
	return n, nil
}

func (s *Store) dead(f delivery.DeadFilter) []*row {
	var out []*row
	for _, r := range s.deliveries {
		if r.State == delivery.Dead && (len(f.IDs) == 0 || slices.Contains(f.IDs, r.ID)) &&
			(f.Channel == "" || r.Channel == f.Channel) && (f.Reason == "" || r.Reason == f.Reason) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b *row) int { return compareIDs(a.ID, b.ID) })
	return out
}

// DeadLetters implements the store's DeadLetters.
func (s *Store) DeadLetters(_ context.Context, f delivery.DeadFilter, after uuid.UUID, limit int) ([]delivery.Delivery, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []delivery.Delivery
	for _, r := range s.dead(f) {
		if compareIDs(r.ID, after) > 0 && len(out) < limit {
			out = append(out, r.read())
		}
	}
	return out, nil
}

// Redrive implements the store's Redrive.
func (s *Store) Redrive(_ context.Context, f delivery.DeadFilter, now time.Time, republishAfter time.Duration) ([]delivery.Due, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []delivery.Due
	for _, r := range s.dead(f) {
		if s.redriveBlocked(r) {
			continue
		}
		r.State, r.Attempts, r.Drive, r.Reason = delivery.Queued, 0, r.Drive+1, ""
		r.publishes, r.published = r.publishes+1, true
		r.DueAt, r.UpdatedAt = ptr(now.Add(republishAfter)), now
		if exp := now.Add(delivery.DefaultTTL); exp.After(r.ExpiresAt) {
			r.ExpiresAt = exp
		}
		out = append(out, delivery.Due{ID: r.ID, Channel: r.Channel})
	}
	return out, nil
}

// EraseUser implements the store's EraseUser.
func (s *Store) EraseUser(_ context.Context, userID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for _, r := range s.deliveries {
		if r.UserID != userID || userID == "" || (r.To == "" && string(r.content) == emptyContent) {
			continue
		}
		r.To, r.content, r.UpdatedAt = "", []byte(emptyContent), now
		if !r.State.Terminal() {
			r.State, r.Reason, r.DueAt = delivery.Canceled, delivery.ReasonUserDeleted, nil
		}
		r.leaseOwner = ""
	}
	if userID != "" {
		s.eraseDigests(userID)
	}
	return nil
}

// Settle implements the store's Settle.
func (s *Store) Settle(_ context.Context, events []delivery.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	events = slices.Clone(events)
	slices.SortStableFunc(events, func(a, b delivery.Event) int {
		if c := a.OccurredAt.Compare(b.OccurredAt); c != 0 {
			return c
		}
		return cmp.Compare(a.EventID, b.EventID)
	})
	seen := map[uuid.UUID]bool{}
	now := s.now()
	for _, e := range events {
		if seen[e.DeliveryID] {
			continue
		}
		seen[e.DeliveryID] = true
		r := s.deliveries[e.DeliveryID]
		if r == nil || !slices.Contains(delivery.EventFrom, r.State) {
			continue
		}
		r.State, r.Reason, r.DueAt, r.leaseOwner, r.UpdatedAt = e.State, e.Reason, nil, "", now
		if r.SentAt == nil {
			r.SentAt = ptr(e.OccurredAt)
		}
		if r.Provider == "" {
			r.Provider = e.Provider
		}
		if r.ProviderMessageID == "" {
			r.ProviderMessageID = e.ProviderMessageID
		}
		s.markChain(r, now)
	}
	return nil
}

// redriveBlocked reports whether dead r is a step of a fallback chain that another step took
// over, as the PostgreSQL store's redriveBlocked does.
func (s *Store) redriveBlocked(r *row) bool {
	if r.Step == 0 {
		return false
	}
	for _, o := range s.deliveries {
		if o.NotificationID == r.NotificationID && o.Step > 0 && o.ID != r.ID && slices.Contains([]delivery.State{
			delivery.Scheduled, delivery.Queued, delivery.Sending, delivery.Retrying, delivery.Sent, delivery.Delivered}, o.State) {
			return true
		}
	}
	return false
}

// markChain makes the later steps of r's fallback chain due at now, for Reconcile to decide, as
// the PostgreSQL store's markChainsSQL does.
func (s *Store) markChain(r *row, now time.Time) {
	if r.Step == 0 {
		return
	}
	for _, w := range s.deliveries {
		if w.NotificationID == r.NotificationID && w.State == delivery.Waiting && w.Step > r.Step && w.DueAt.After(now) {
			w.DueAt = ptr(now)
		}
	}
}

// decideStep decides a due waiting step w from the steps before it, as the PostgreSQL store's
// decideStepsSQL does: it returns whether w was queued.
func (s *Store) decideStep(w *row, now time.Time, republishAfter time.Duration) bool {
	var skip, wait bool
	var timer *time.Time
	for _, p := range s.deliveries {
		if p.NotificationID != w.NotificationID || p.Step <= 0 || p.Step >= w.Step {
			continue
		}
		switch p.State {
		case delivery.Delivered:
			skip = true
		case delivery.Sent:
			if p.StepTimeout == 0 {
				skip = true
			} else if end := p.sentAt().Add(p.StepTimeout); end.After(now) && (timer == nil || end.Before(*timer)) {
				timer = &end
			}
		case delivery.Scheduled, delivery.Waiting, delivery.Queued, delivery.Sending, delivery.Retrying:
			wait = true
		}
	}
	switch {
	case skip:
		w.State, w.Reason, w.DueAt, w.UpdatedAt = delivery.Skipped, delivery.ReasonFallbackNotNeeded, nil, now
	case wait:
		w.DueAt = ptr(minTime(w.ExpiresAt, now.Add(republishAfter)))
	case timer != nil:
		w.DueAt = ptr(minTime(w.ExpiresAt, *timer))
	default:
		w.State, w.UpdatedAt, w.published = delivery.Queued, now, true
		w.DueAt = ptr(minTime(w.ExpiresAt, now.Add(republishAfter)))
		for _, p := range s.deliveries {
			if p.NotificationID == w.NotificationID && p.Step > 0 && p.Step < w.Step && p.State == delivery.Sent && p.Reason == "" {
				p.Reason = delivery.ReasonStepTimeout
			}
		}
		return true
	}
	return false
}

// OfNotification implements the store's OfNotification.
func (s *Store) OfNotification(_ context.Context, notificationID uuid.UUID) ([]delivery.Delivery, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []delivery.Delivery
	for _, r := range s.deliveries {
		if r.NotificationID == notificationID {
			d := r.read()
			if g := s.digests[d.DigestID]; g != nil {
				d.DigestDeliveryID = g.DeliveryID
			}
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b delivery.Delivery) int { return compareIDs(a.ID, b.ID) })
	return out, nil
}

// Get returns a delivery as stored, with its content, for tests to look at.
func (s *Store) Get(id uuid.UUID) (delivery.Delivery, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.deliveries[id]
	if !ok {
		return delivery.Delivery{}, false
	}
	return r.copy(), true
}

// Attempts returns the attempt log of a delivery, by drive and attempt.
func (s *Store) Attempts(id uuid.UUID) []Attempt {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Attempt
	for k, a := range s.attempts {
		if k.id == id {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(a, b Attempt) int {
		if a.Drive != b.Drive {
			return a.Drive - b.Drive
		}
		return a.Attempt.Attempt - b.Attempt.Attempt
	})
	return out
}

// copy is the delivery as stored, with its content.
func (r *row) copy() delivery.Delivery {
	d := r.read()
	// Only Create encodes content, and only what it could encode.
	if err := json.Unmarshal(r.content, &d.Content); err != nil {
		panic(fmt.Sprintf("memstore: content of delivery %s: %v", r.ID, err))
	}
	return d
}

// claimed is the delivery as the PostgreSQL store's claim returns it: what a worker needs to
// send it, not what earlier attempts left.
func (r *row) claimed() delivery.Delivery {
	d := r.copy()
	d.Reason, d.LastError, d.Provider, d.ProviderMessageID, d.SentAt = "", "", "", "", nil
	return d
}

// read is the delivery as the PostgreSQL store reads it outside a claim: without its content.
func (r *row) read() delivery.Delivery {
	d := r.Delivery
	d.DueAt, d.SentAt = clone(d.DueAt), clone(d.SentAt)
	return d
}

// sentAt is when r was sent; the zero time (long ago) when no time was recorded, as
// PostgreSQL's NULL compares false with any time.
func (r *row) sentAt() time.Time {
	if r.SentAt == nil {
		return time.Time{}
	}
	return *r.SentAt
}

func compareIDs(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) }

func ptr[T any](v T) *T { return &v }

func clone(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	return ptr(*t)
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
