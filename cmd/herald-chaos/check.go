package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"

	"github.com/heraldhq/herald/cmd/internal/loopstack"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

// backupProvider is how the attempt log names email's second provider in the chaos stack
// (loopstack's providers file).
const backupProvider = "sendgrid/backup"

// nonTerminal is the SQL condition of a delivery that has not reached a terminal state.
const nonTerminal = `state IN ('scheduled', 'waiting', 'queued', 'sending', 'retrying')`

// settle waits, after the load and the faults, until no delivery is left non-terminal and no
// topic send is fanning out, or until timeout. It never judges by how long anything took: the verdict reads final states.
func (p *phase) settle(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	lastLog := time.Now()
	for {
		if err := p.ensureRunning(ctx); err != nil {
			return err
		}
		var open int64
		err := retry(ctx, func(ctx context.Context) error {
			// A topic send still fanning out has deliveries to come.
			return p.db.QueryRow(ctx, `SELECT (SELECT count(*) FROM delivery.deliveries WHERE `+nonTerminal+`)
				+ (SELECT count(*) FROM notifier.topic_sends WHERE state = 'fanning_out')`).Scan(&open)
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
	// Inbox: the deliveries of acknowledged inbox sends, and of those, stored in the inbox;
	// the messages stored that no acknowledged send asked for (counted among the strays too);
	// the users' messages as PostgreSQL counts them and as InboxService's unread counts say.
	inboxSent, inboxStored, inboxExtra, inboxRows, inboxUnread int64
	// Digests: the acknowledged items, and of those, DIGESTED in a closed digest with a
	// terminal delivery; the digests closed with a delivery, those with more than one, and
	// those left open; the digests' deliveries received by a fake, and received again.
	digestItems, digestItemsDone, digests, digestsMulti, digestsOpen, digestsReceived, digestDuplicates int64
	// Topics: the acknowledged topic sends and of those DONE; their subscribers; and the
	// (subscriber, channel) pairs with exactly one delivery, with none, and with more than one.
	topicSends, topicDone, topicSubscribers, topicOnce, topicMissing, topicDoubled int64
}

// check compares the history with what the fakes received and what the database says.
func (p *phase) check(ctx context.Context) (*verdict, error) {
	h := p.h
	v := &verdict{
		acked: h.acked.Load(), unknown: h.unknown.Load(), failed: h.failed.Load(), notQueued: h.notQueue.Load(),
		lostStates: map[string]int64{}, terminalFailed: map[string]int64{}, emailVia: map[string]int64{},
	}
	// The topic sends' deliveries and the digests' deliveries first: no Send answered for them, so they join the tracked ones
	// here, and are then judged as any other (lost, duplicates, strays).
	if err := p.checkTopics(ctx, v); err != nil {
		return nil, err
	}
	if err := p.checkDigests(ctx, v); err != nil {
		return nil, err
	}
	v.deliveries, v.duplicates = h.t.Queued.Load(), h.t.Duplicates.Load()
	v.strays = int64(h.t.Strays()) + h.t.BadIDs.Load()
	if err := p.checkInbox(ctx, v); err != nil {
		return nil, err
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

// terminal reports whether a delivery state is terminal.
func terminal(state string) bool {
	switch state {
	case "scheduled", "waiting", "queued", "sending", "retrying":
		return false
	}
	return true
}

// checkInbox checks that every acknowledged inbox delivery was stored in its user's inbox once
// (the messages' primary key is the delivery id) and reached a terminal state, that the inbox
// holds nothing more than the unknown sends may explain, and that InboxService counts what
// PostgreSQL holds.
func (p *phase) checkInbox(ctx context.Context, v *verdict) error {
	p.h.mu.Lock()
	var ids []uuid.UUID
	want := map[uuid.UUID]string{}
	for s, user := range p.h.inbox {
		if id, err := uuid.Parse(s); err == nil {
			ids = append(ids, id)
			want[id] = user
		}
	}
	p.h.mu.Unlock()
	v.inboxSent = int64(len(ids))
	type row struct {
		state string
		user  *string
	}
	got := map[uuid.UUID]row{}
	err := retry(ctx, func(ctx context.Context) error {
		clear(got)
		rows, err := p.db.Query(ctx, `SELECT d.id, d.state, m.user_id FROM delivery.deliveries d
			LEFT JOIN inbox.messages m ON m.id = d.id WHERE d.id = ANY($1)`, ids)
		if err != nil {
			return err
		}
		var id uuid.UUID
		var r row
		_, err = pgx.ForEachRow(rows, []any{&id, &r.state, &r.user}, func() error {
			got[id] = r
			return nil
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("check the inbox deliveries: %w", err)
	}
	for _, id := range ids {
		r, ok := got[id]
		switch {
		case !ok:
			v.lost++
			v.lostStates["inbox missing"]++
		case r.user != nil && *r.user == want[id] && terminal(r.state):
			v.inboxStored++
		case r.user == nil && terminal(r.state) && r.state != "sent" && r.state != "delivered":
			v.terminalFailed["inbox "+r.state]++
		default: // sent and not stored, stored for another user, or never terminal
			v.lost++
			v.lostStates["inbox "+r.state]++
			stored := "nobody"
			if r.user != nil {
				stored = *r.user
			}
			p.log("LOST: inbox delivery %s to %s is %s, stored for %s", id, want[id], r.state, stored)
		}
	}

	// The inbox users, and the topic's subscribers when a topic send went to them.
	seen := map[string]bool{}
	var users []string
	for k := range int64(inboxUsers) {
		seen[inboxUser(k*chainEvery)] = true
		users = append(users, inboxUser(k*chainEvery))
	}
	for _, user := range want {
		if !seen[user] {
			seen[user] = true
			users = append(users, user)
		}
	}
	err = retry(ctx, func(ctx context.Context) error {
		return p.db.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE NOT id = ANY($2))
			FROM inbox.messages WHERE user_id = ANY($1)`, users, ids).Scan(&v.inboxRows, &v.inboxExtra)
	})
	if err != nil {
		return fmt.Errorf("count the inbox messages: %w", err)
	}
	v.strays += v.inboxExtra
	for _, user := range users {
		var n int64
		if err := retry(ctx, func(ctx context.Context) (err error) {
			n, err = p.unread(ctx, user)
			return err
		}); err != nil {
			return fmt.Errorf("unread count of %s: %w", user, err)
		}
		v.inboxUnread += n
	}
	return nil
}

// unreadCounter returns InboxService's unread count of a user, asked with the app key.
func unreadCounter(conn grpc.ClientConnInterface) func(context.Context, string) (int64, error) {
	inbox := heraldv1.NewInboxServiceClient(conn)
	return func(ctx context.Context, user string) (int64, error) {
		res, err := inbox.GetUnreadCount(ctx, &heraldv1.GetUnreadCountRequest{UserId: user})
		return int64(res.GetUnread()), err
	}
}

// topicChannels are the channels the topic send names, as the deliveries table spells them.
var topicChannels = []string{"email", "inbox"}

// checkTopics checks that every acknowledged topic send is DONE and made exactly one delivery
// per channel for each subscriber. Its email deliveries join the tracker, and its inbox
// deliveries the inbox's, as a Send's would: each is then judged lost, duplicated or stored
// once as any other.
func (p *phase) checkTopics(ctx context.Context, v *verdict) error {
	p.h.mu.Lock()
	var ids []uuid.UUID
	for _, s := range p.h.topicSends {
		if id, err := uuid.Parse(s); err == nil {
			ids = append(ids, id)
		}
	}
	p.h.mu.Unlock()
	v.topicSends = int64(len(ids))
	now := time.Now()
	for _, send := range ids {
		var done bool
		type pair struct{ user, channel string }
		got := map[pair][]uuid.UUID{}
		err := retry(ctx, func(ctx context.Context) error {
			clear(got)
			if err := p.db.QueryRow(ctx, `SELECT state = 'done' FROM notifier.topic_sends WHERE id = $1`, send).Scan(&done); err != nil {
				return err
			}
			rows, err := p.db.Query(ctx, `SELECT n.user_id, d.channel, d.id FROM notifier.notifications n
				JOIN delivery.deliveries d ON d.notification_id = n.id WHERE n.topic_send_id = $1`, send)
			if err != nil {
				return err
			}
			var pr pair
			var id uuid.UUID
			_, err = pgx.ForEachRow(rows, []any{&pr.user, &pr.channel, &id}, func() error {
				got[pr] = append(got[pr], id)
				return nil
			})
			return err
		})
		if err != nil {
			return fmt.Errorf("check topic send %s: %w", send, err)
		}
		if done {
			v.topicDone++
		}
		v.topicSubscribers += topicSubscribers
		for k := range topicSubscribers {
			for _, ch := range topicChannels {
				ds := got[pair{topicUser(k), ch}]
				switch {
				case len(ds) == 0:
					v.topicMissing++
					continue
				case len(ds) > 1:
					v.topicDoubled++
				default:
					v.topicOnce++
				}
				for _, id := range ds {
					p.h.mu.Lock()
					if ch == "inbox" {
						p.h.inbox[id.String()] = topicUser(k)
					} else {
						p.h.ids[loopstack.Key(id)] = id.String()
					}
					p.h.mu.Unlock()
					if ch != "inbox" {
						p.h.t.Accept(loopstack.Key(id), now)
					}
				}
			}
		}
	}
	return nil
}

// checkDigests checks that every acknowledged digest item ended DIGESTED in a closed digest
// whose one delivery reached a terminal state, and hands the digests' deliveries to the
// tracker, as if a Send had answered for them, so that each is judged lost, duplicated or
// received as any other delivery.
func (p *phase) checkDigests(ctx context.Context, v *verdict) error {
	p.h.mu.Lock()
	var ids []uuid.UUID
	for _, s := range p.h.digestItems {
		if id, err := uuid.Parse(s); err == nil {
			ids = append(ids, id)
		}
	}
	p.h.mu.Unlock()
	v.digestItems = int64(len(ids))
	type row struct {
		state         string
		closed        *bool
		deliveryState *string
	}
	got := map[uuid.UUID]row{}
	err := retry(ctx, func(ctx context.Context) error {
		clear(got)
		rows, err := p.db.Query(ctx, `SELECT d.id, d.state, g.closed, dd.state FROM delivery.deliveries d
			LEFT JOIN delivery.digests g ON g.id = d.digest_id
			LEFT JOIN delivery.deliveries dd ON dd.id = g.delivery_id
			WHERE d.id = ANY($1)`, ids)
		if err != nil {
			return err
		}
		var id uuid.UUID
		var r row
		_, err = pgx.ForEachRow(rows, []any{&id, &r.state, &r.closed, &r.deliveryState}, func() error {
			got[id] = r
			return nil
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("check the digest items: %w", err)
	}
	for _, id := range ids {
		r, ok := got[id]
		switch {
		case !ok:
			v.lost++
			v.lostStates["digest item missing"]++
		case r.state == "digested" && r.closed != nil && *r.closed && r.deliveryState != nil && terminal(*r.deliveryState):
			v.digestItemsDone++
		default:
			v.lost++
			v.lostStates["digest item "+r.state]++
			closed, st := r.closed != nil && *r.closed, "none"
			if r.deliveryState != nil {
				st = *r.deliveryState
			}
			p.log("LOST: digest item %s is %s (digest closed %v, its delivery %s)", id, r.state, closed, st)
		}
	}

	// Every digest of the digest users (the unknown sends' too): closed, with one delivery.
	users := make([]string, digestUsers)
	for k := range int64(digestUsers) {
		users[k] = digestUser(k)
	}
	var deliveries []uuid.UUID
	err = retry(ctx, func(ctx context.Context) error {
		if err := p.db.QueryRow(ctx, `SELECT count(*) FILTER (WHERE NOT closed),
				count(*) FILTER (WHERE (SELECT count(*) FROM delivery.deliveries d WHERE d.notification_id = g.id) > 1)
			FROM delivery.digests g WHERE user_id = ANY($1)`, users).Scan(&v.digestsOpen, &v.digestsMulti); err != nil {
			return err
		}
		rows, err := p.db.Query(ctx, `SELECT delivery_id FROM delivery.digests
			WHERE user_id = ANY($1) AND delivery_id IS NOT NULL`, users)
		if err != nil {
			return err
		}
		deliveries, err = pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
		return err
	})
	if err != nil {
		return fmt.Errorf("check the digests: %w", err)
	}
	v.digests = int64(len(deliveries))
	now := time.Now()
	keys := map[loopstack.Key]bool{}
	for _, id := range deliveries {
		k := loopstack.Key(id)
		keys[k] = true
		p.h.mu.Lock()
		p.h.ids[k] = id.String()
		p.h.mu.Unlock()
		p.h.t.Accept(k, now)
	}
	p.h.t.Each(func(k loopstack.Key, _ bool, receipts int) {
		if keys[k] && receipts > 0 {
			v.digestsReceived++
			v.digestDuplicates += int64(receipts - 1)
		}
	})
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
	v.inboxSent += o.inboxSent
	v.inboxStored += o.inboxStored
	v.inboxExtra += o.inboxExtra
	v.inboxRows += o.inboxRows
	v.inboxUnread += o.inboxUnread
	v.digestItems += o.digestItems
	v.digestItemsDone += o.digestItemsDone
	v.digests += o.digests
	v.digestsMulti += o.digestsMulti
	v.digestsOpen += o.digestsOpen
	v.digestsReceived += o.digestsReceived
	v.digestDuplicates += o.digestDuplicates
	v.topicSends += o.topicSends
	v.topicDone += o.topicDone
	v.topicSubscribers += o.topicSubscribers
	v.topicOnce += o.topicOnce
	v.topicMissing += o.topicMissing
	v.topicDoubled += o.topicDoubled
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
	if v.inboxUnread != v.inboxRows {
		out = append(out, fmt.Sprintf("InboxService counts %d unread messages, PostgreSQL holds %d", v.inboxUnread, v.inboxRows))
	}
	if v.topicDone < v.topicSends {
		out = append(out, fmt.Sprintf("%d of %d topic sends not DONE", v.topicSends-v.topicDone, v.topicSends))
	}
	if v.topicMissing > 0 || v.topicDoubled > 0 {
		out = append(out, fmt.Sprintf("topic subscribers' deliveries: %d (subscriber, channel) pairs with none, %d with more than one",
			v.topicMissing, v.topicDoubled))
	}
	if v.digestsMulti > 0 {
		out = append(out, fmt.Sprintf("%d digests sent more than one delivery", v.digestsMulti))
	}
	if v.digestsOpen > 0 {
		out = append(out, fmt.Sprintf("%d digests still open after settling", v.digestsOpen))
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
