package main

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/internal/delivery"
	deliverypg "github.com/heraldhq/herald/internal/delivery/postgres"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestCheckChains: the check counts how each acknowledged chain ended, from the deliveries'
// states in the database, and a chain that reached the user twice is a violation.
func TestCheckChains(t *testing.T) {
	url := pgtest.DB(t, "chaos", func(ctx context.Context, url string) error {
		pool, err := pgdb.Open(ctx, url, 2)
		if err != nil {
			return err
		}
		defer pool.Close()
		return deliverypg.Migrate(ctx, pool, slog.New(slog.DiscardHandler))
	})
	db, err := pgxpool.New(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	store := deliverypg.New(db)
	t.Cleanup(store.Close)

	now := time.Now()
	h := newHistory(nil)
	var ds []delivery.Delivery
	for _, states := range [][]delivery.State{
		{delivery.Sent, delivery.Skipped},      // the first step went
		{delivery.Failed, delivery.Sent},       // the chain moved on
		{delivery.Failed, delivery.Failed},     // every step failed
		{delivery.Delivered, delivery.Bounced}, // both reached a provider
		{delivery.Sending, delivery.Waiting},   // still open: neither
	} {
		n := uuid.Must(uuid.NewV7())
		h.chains = append(h.chains, n.String())
		for i, st := range states {
			ds = append(ds, delivery.Delivery{ID: uuid.Must(uuid.NewV7()), NotificationID: n, Channel: delivery.Email,
				To: "a@example.com", Category: "account", Priority: delivery.Normal, State: st, Step: i + 1,
				ExpiresAt: now.Add(time.Hour), CreatedAt: now})
		}
	}
	if err := store.Create(t.Context(), ds); err != nil {
		t.Fatal(err)
	}
	p := &phase{db: db, h: h}
	v := &verdict{lostStates: map[string]int64{}, terminalFailed: map[string]int64{}}
	if err := p.checkChains(t.Context(), v); err != nil {
		t.Fatal(err)
	}
	if v.chains != 5 || v.chainsSent != 2 || v.chainsFailed != 1 || v.chainsDoubled != 1 {
		t.Errorf("chains %d, sent %d, failed %d, doubled %d; want 5, 2, 1, 1", v.chains, v.chainsSent, v.chainsFailed, v.chainsDoubled)
	}
}

// TestChainRequest: a chain's address and number are its own, and every other chain starts
// with an address the provider refuses.
func TestChainRequest(t *testing.T) {
	var refused []string
	l := &load{refuse: func(e string) { refused = append(refused, e) }}
	used := map[string]bool{}
	for i := range int64(200) {
		req, _, number := request(i)
		a := req.GetRecipient().GetAddress()
		for _, s := range []string{a.GetEmail(), number} {
			if s != "" {
				used[s] = true
			}
		}
	}
	for i := int64(chainEvery - 1); i < 200; i += chainEvery {
		req, number := l.chainRequest(i)
		a := req.GetRecipient().GetAddress()
		if used[a.GetEmail()] || used[number] || a.GetPhone() != number || len(req.GetChannels()) != 0 ||
			len(req.GetFallback().GetChannels()) != 2 {
			t.Errorf("chain %d: %v (number %s) shares an address, or is not email then SMS", i, req, number)
		}
	}
	if len(refused) != 5 {
		t.Errorf("refused %d addresses, want every other chain's: 5", len(refused))
	}
}
