package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/cmd/internal/loopstack"
)

// backupProvider is how the attempt log names email's second provider in the chaos stack
// (loopstack's providers file).
const backupProvider = "sendgrid/backup"

// nonTerminal is the SQL condition of a delivery that has not reached a terminal state.
const nonTerminal = `state IN ('scheduled', 'waiting', 'queued', 'sending', 'retrying')`

// settle waits, after the load and the faults, until no delivery is left non-terminal, or
// until timeout. It never judges by how long anything took: the verdict reads final states.
func (p *phase) settle(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	lastLog := time.Now()
	for {
		if err := p.ensureRunning(ctx); err != nil {
			return err
		}
		var open int64
		err := retry(ctx, func(ctx context.Context) error {
			return p.db.QueryRow(ctx, `SELECT count(*) FROM delivery.deliveries WHERE `+nonTerminal).Scan(&open)
		})
		if err != nil {
			return fmt.Errorf("count open deliveries: %w", err)
		}
		if open == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			p.log("settling: %d deliveries still not terminal after %v; judging now", open, timeout)
			return nil
		}
		if time.Since(lastLog) >= 10*time.Second {
			p.log("settling: %d deliveries not terminal yet; %d of %d acknowledged received",
				open, p.h.t.Delivered.Load(), p.h.t.Queued.Load())
			lastLog = time.Now()
		}
		if err := sleep(ctx, 500*time.Millisecond); err != nil {
			return err
		}
	}
}

// verdict is what one phase's check found.
type verdict struct {
	acked, unknown, failed int64
	deliveries             int64 // of the acknowledged sends, answered QUEUED
	lost                   int64
	lostStates             map[string]int64 // state of each lost delivery ("missing": no row)
	terminalFailed         map[string]int64 // acknowledged, not received, terminal for a reason
	duplicates, bound      int64
	stuck, open            int64
	strays                 int64 // received deliveries that no acknowledged Send answered for
	faults, crashes        map[string]int
	notQueued              int64
	// emailVia counts the emails sent, by the provider and credential that took them
	// (sendgrid/primary, sendgrid/backup).
	emailVia map[string]int64
	// Fallback chains: acknowledged, and of those, ended with one step sent, ended with every
	// step failed, and ended with more than one step sent (two channels reached the user).
	chains, chainsSent, chainsFailed, chainsDoubled int64
}

// check compares the history with what the fakes received and what the database says.
func (p *phase) check(ctx context.Context) (*verdict, error) {
	h := p.h
	v := &verdict{
		acked: h.acked.Load(), unknown: h.unknown.Load(), failed: h.failed.Load(),
		deliveries: h.t.Queued.Load(), duplicates: h.t.Duplicates.Load(),
		strays: int64(h.t.Strays()) + h.t.BadIDs.Load(), notQueued: h.notQueue.Load(),
		lostStates: map[string]int64{}, terminalFailed: map[string]int64{}, emailVia: map[string]int64{},
	}
	p.mu.Lock()
	v.bound, v.faults, v.crashes = p.bound, maps.Clone(p.faults), maps.Clone(p.crashes)
	p.mu.Unlock()

	// The acknowledged deliveries that no fake received: each must be terminal for a reason of
	// its own (a permanent provider answer, attempts used up, expiry), or it is lost.
	var missing []uuid.UUID
	h.t.Each(func(k loopstack.Key, accepted bool, receipts int) {
		if !accepted || receipts > 0 {
			return
		}
		h.mu.Lock()
		id := h.ids[k]
		h.mu.Unlock()
		u, err := uuid.Parse(id)
		if err != nil {
			v.lost++
			v.lostStates["bad id"]++
			return
		}
		missing = append(missing, u)
	})
	states := map[uuid.UUID]string{}
	if len(missing) > 0 {
		err := retry(ctx, func(ctx context.Context) error {
			rows, err := p.db.Query(ctx, `SELECT id, state FROM delivery.deliveries WHERE id = ANY($1)`, missing)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var id uuid.UUID
				var state string
				if err := rows.Scan(&id, &state); err != nil {
					return err
				}
				states[id] = state
			}
			return rows.Err()
		})
		if err != nil {
			return nil, fmt.Errorf("states of the deliveries not received: %w", err)
		}
	}
	for _, id := range missing {
		switch st, ok := states[id]; {
		case !ok:
			v.lost++
			v.lostStates["missing"]++
		case st == "failed" || st == "dead" || st == "skipped" || st == "expired" || st == "canceled":
			v.terminalFailed[st]++
		default: // sent without reaching a provider, or never terminal
			v.lost++
			v.lostStates[st]++
			if v.lost <= 5 {
				p.log("LOST: delivery %s is %s and no provider received it", id, st)
			}
		}
	}

	if err := p.checkChains(ctx, v); err != nil {
		return nil, err
	}

	err := retry(ctx, func(ctx context.Context) error {
		return p.db.QueryRow(ctx, `SELECT count(*) FILTER (WHERE due_at IS NULL OR due_at < now()), count(*)
			FROM delivery.deliveries WHERE `+nonTerminal).Scan(&v.stuck, &v.open)
	})
	if err != nil {
		return nil, fmt.Errorf("count stuck deliveries: %w", err)
	}
	err = retry(ctx, func(ctx context.Context) error {
		clear(v.emailVia)
		rows, err := p.db.Query(ctx, `SELECT provider, count(*) FROM delivery.deliveries
			WHERE channel = 'email' AND state IN ('sent', 'delivered', 'bounced') GROUP BY provider`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var provider string
			var n int64
			if err := rows.Scan(&provider, &n); err != nil {
				return err
			}
			v.emailVia[provider] = n
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("count emails by provider: %w", err)
	}
	return v, nil
}

// checkChains counts how the acknowledged fallback chains ended: with exactly one step sent
// (sent, delivered or bounced: a provider took it), or with every step failed. A chain with two
// steps sent reached the user twice. A chain still open counts as neither: the open deliveries
// are a violation of their own.
func (p *phase) checkChains(ctx context.Context, v *verdict) error {
	p.h.mu.Lock()
	var ids []uuid.UUID
	for _, s := range p.h.chains {
		if id, err := uuid.Parse(s); err == nil {
			ids = append(ids, id)
		}
	}
	p.h.mu.Unlock()
	v.chains = int64(len(ids))
	if len(ids) == 0 {
		return nil
	}
	err := retry(ctx, func(ctx context.Context) error {
		return p.db.QueryRow(ctx, `
			WITH c AS (
				SELECT notification_id,
					count(DISTINCT step) FILTER (WHERE state IN ('sent', 'delivered', 'bounced')) AS sent,
					count(*) FILTER (WHERE `+nonTerminal+`) AS open
				FROM delivery.deliveries WHERE notification_id = ANY($1) GROUP BY notification_id
			)
			SELECT count(*) FILTER (WHERE sent = 1), count(*) FILTER (WHERE sent = 0 AND open = 0),
				count(*) FILTER (WHERE sent > 1)
			FROM c`, ids).Scan(&v.chainsSent, &v.chainsFailed, &v.chainsDoubled)
	})
	if err != nil {
		return fmt.Errorf("check the fallback chains: %w", err)
	}
	return nil
}

// add sums two phases' verdicts.
func (v *verdict) add(o *verdict) {
	v.acked += o.acked
	v.unknown += o.unknown
	v.failed += o.failed
	v.deliveries += o.deliveries
	v.lost += o.lost
	v.duplicates += o.duplicates
	v.bound += o.bound
	v.stuck += o.stuck
	v.open += o.open
	v.strays += o.strays
	v.notQueued += o.notQueued
	v.chains += o.chains
	v.chainsSent += o.chainsSent
	v.chainsFailed += o.chainsFailed
	v.chainsDoubled += o.chainsDoubled
	for _, m := range []struct{ dst, src map[string]int64 }{{v.lostStates, o.lostStates}, {v.terminalFailed, o.terminalFailed},
		{v.emailVia, o.emailVia}} {
		for k, n := range m.src {
			m.dst[k] += n
		}
	}
	for _, m := range []struct{ dst, src map[string]int }{{v.faults, o.faults}, {v.crashes, o.crashes}} {
		for k, n := range m.src {
			m.dst[k] += n
		}
	}
}

// violations lists what breaks the guarantees.
func (v *verdict) violations() []string {
	var out []string
	if v.lost > 0 {
		out = append(out, fmt.Sprintf("%d acknowledged deliveries lost (%s)", v.lost, counts(v.lostStates)))
	}
	if v.duplicates > v.bound {
		out = append(out, fmt.Sprintf("%d duplicates at the providers, more than the %d sends in flight at the kills", v.duplicates, v.bound))
	}
	if v.stuck > 0 {
		out = append(out, fmt.Sprintf("%d deliveries stuck non-terminal past their deadline", v.stuck))
	}
	if v.open > 0 {
		out = append(out, fmt.Sprintf("%d deliveries not terminal after settling", v.open))
	}
	if v.notQueued > 0 {
		out = append(out, fmt.Sprintf("%d deliveries of acknowledged sends answered other than QUEUED", v.notQueued))
	}
	// The email failover fault makes the first SendGrid refuse every request for a while: the
	// second must have taken some emails, or failover did not happen (and the emails waited out
	// the fault instead).
	if v.faults["email-failover"] > 0 && v.emailVia[backupProvider] == 0 {
		out = append(out, fmt.Sprintf("no email failed over to %s while the first provider refused (emails by provider: %s)",
			backupProvider, counts(v.emailVia)))
	}
	if v.chainsDoubled > 0 {
		out = append(out, fmt.Sprintf("%d fallback chains sent more than one step", v.chainsDoubled))
	}
	if v.strays > v.unknown {
		out = append(out, fmt.Sprintf("%d deliveries received that no Send asked for (only %d sends were unknown)", v.strays, v.unknown))
	}
	return out
}

func counts[N int | int64](m map[string]N) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}
