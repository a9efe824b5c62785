package memstore

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
)

// collect puts the rows of ds that go into a digest into their key's open digest, opening one
// when there is none, as the PostgreSQL store's Create does. s.mu is held.
func (s *Store) collect(ds []delivery.Delivery, rows []*row) {
	for i := range ds {
		d := &ds[i]
		if !d.InDigest() {
			continue
		}
		g := s.openDigest(d)
		if g == nil {
			id, err := uuid.NewV7()
			if err != nil {
				panic(err) // only when the system's random source fails
			}
			g = &delivery.DigestRecord{ID: id, AppID: d.AppID, UserID: d.UserID, Category: d.Category,
				Channel: d.Channel, To: d.To, Template: d.Digest.Template, Locale: d.Digest.Locale,
				CloseAt: d.Digest.CloseAt, CreatedAt: d.CreatedAt}
			s.digests[id] = g
		}
		d.DigestID = g.ID
		rows[i].DigestID = g.ID
		rows[i].Digest = nil
	}
}

func (s *Store) openDigest(d *delivery.Delivery) *delivery.DigestRecord {
	for _, g := range s.digests {
		if !g.Closed && g.AppID == d.AppID && g.UserID == d.UserID && g.Category == d.Category &&
			g.Channel == d.Channel && g.To == d.To {
			return g
		}
	}
	return nil
}

// DueDigests implements the store's DueDigests.
func (s *Store) DueDigests(_ context.Context, now time.Time, limit int) ([]delivery.DigestRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var due []*delivery.DigestRecord
	for _, g := range s.digests {
		if !g.Closed && !g.CloseAt.After(now) {
			due = append(due, g)
		}
	}
	slices.SortFunc(due, func(a, b *delivery.DigestRecord) int { return a.CloseAt.Compare(b.CloseAt) })
	var out []delivery.DigestRecord
	for _, g := range due[:min(limit, len(due))] {
		out = append(out, *g)
	}
	return out, nil
}

// Digest implements the store's Digest.
func (s *Store) Digest(_ context.Context, id uuid.UUID) (delivery.DigestRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.digests[id]
	if g == nil {
		return delivery.DigestRecord{}, errs.E(errs.NotFound, "digest %s not found", id)
	}
	return *g, nil
}

// CloseDigest implements the store's CloseDigest. build runs with the store locked: it must not
// call the store.
func (s *Store) CloseDigest(_ context.Context, id uuid.UUID, now time.Time,
	build func(g delivery.DigestRecord, items []delivery.Delivery) (*delivery.Delivery, error)) (*delivery.Delivery, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.digests[id]
	if g == nil || g.Closed || g.CloseAt.After(now) {
		return nil, nil
	}
	var items []delivery.Delivery
	for _, r := range s.deliveries {
		if r.DigestID == id && r.State == delivery.Scheduled && r.Reason == delivery.ReasonDigest && r.ExpiresAt.After(now) {
			items = append(items, r.claimed())
		}
	}
	slices.SortFunc(items, func(a, b delivery.Delivery) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), compareIDs(a.ID, b.ID))
	})
	var made *delivery.Delivery
	if len(items) > 0 {
		var err error
		if made, err = build(*g, items); err != nil {
			return nil, err
		}
		if err := s.create([]delivery.Delivery{*made}); err != nil {
			return nil, fmt.Errorf("close digest %s: %w", id, err)
		}
		for _, it := range items {
			r := s.deliveries[it.ID]
			r.State, r.Reason, r.DueAt, r.UpdatedAt = delivery.Digested, "", nil, now
		}
		g.DeliveryID = made.ID
	}
	g.Closed = true
	return made, nil
}

// eraseDigests clears the address of a deleted user's digests and closes the open ones. s.mu
// is held.
func (s *Store) eraseDigests(userID string) {
	for _, g := range s.digests {
		if g.UserID == userID {
			g.To, g.Closed = "", true
		}
	}
}

// OpenDigest implements the store's OpenDigest.
func (s *Store) OpenDigest(_ context.Context, app uuid.UUID, userID, category string, ch delivery.Channel, to string) (delivery.DigestRecord, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.openDigest(&delivery.Delivery{AppID: app, UserID: userID, Category: category, Channel: ch, To: to})
	if g == nil {
		return delivery.DigestRecord{}, false, nil
	}
	return *g, true, nil
}
