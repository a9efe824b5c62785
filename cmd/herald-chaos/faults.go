package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/cmd/internal/loopstack"
	"github.com/heraldhq/herald/internal/fakes/apnsfake"
	"github.com/heraldhq/herald/internal/fakes/fcmfake"
	"github.com/heraldhq/herald/internal/fakes/sendgridfake"
)

// phase is one stack under faults: the fault injector, and what it learnt about the duplicates
// the faults may cause.
type phase struct {
	name string
	s    *loopstack.Stack
	db   *pgxpool.Pool
	h    *history
	// sendTopic sends to the chaos topic once, and returns the topic send's id.
	sendTopic func(ctx context.Context) (string, error)
	// unread is InboxService's unread count of a user.
	unread func(ctx context.Context, user string) (int64, error)
	log    func(format string, args ...any)
	start  time.Time

	mu sync.Mutex
	// bound is how many duplicates the faults so far may cause: the deliveries claimed but not
	// yet recorded (in flight to a provider) at each death of the workers or of PostgreSQL, and
	// the messages a provider fake accepted and then dropped the answer of.
	bound   int64
	faults  map[string]int
	crashes map[string]int
}

// inFlight returns the ids of the deliveries that a worker has claimed and not yet recorded an
// outcome for (state sending). Asked right after the workers die, they are exactly the sends
// that may have reached a provider without the database knowing.
func (p *phase) inFlight(ctx context.Context, claimedBefore time.Time) (map[uuid.UUID]bool, error) {
	ids := map[uuid.UUID]bool{}
	err := retry(ctx, func(ctx context.Context) error {
		rows, err := p.db.Query(ctx, `SELECT id FROM delivery.deliveries WHERE state = 'sending' AND updated_at <= $1`, claimedBefore)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id uuid.UUID
			if err := rows.Scan(&id); err != nil {
				return err
			}
			ids[id] = true
		}
		return rows.Err()
	})
	return ids, err
}

// retry runs f until it succeeds, for up to a minute: the database may be restarting.
func retry(ctx context.Context, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		qctx, qcancel := context.WithTimeout(ctx, 10*time.Second)
		err := f(qctx)
		qcancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (p *phase) count(fault string) {
	p.mu.Lock()
	p.faults[fault]++
	p.mu.Unlock()
}

func (p *phase) addBound(n int) {
	p.mu.Lock()
	p.bound += int64(n)
	p.mu.Unlock()
}

// watch restarts what dies on its own, and counts it: a service that exits because a
// dependency went away is itself a finding. A workers process that dies leaves its claims in
// flight, which bound the duplicates as a kill's do.
func (p *phase) watch(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-p.s.Failed:
			name, _, _ := strings.Cut(err.Error(), " ")
			p.mu.Lock()
			p.crashes[name]++
			p.mu.Unlock()
			p.log("UNEXPECTED: %s", firstLine(err.Error()))
			if name == "workers" {
				ids, qerr := p.inFlight(ctx, time.Now())
				if qerr != nil {
					p.log("in flight at the workers' death: %v", qerr)
				}
				p.addBound(len(ids))
			}
		}
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// ensureRunning starts again any service that died on its own.
func (p *phase) ensureRunning(ctx context.Context) error {
	for _, name := range []string{"notifier", "contacts", "workers"} {
		select {
		case <-p.proc(name).Exited():
			if err := p.startRetrying(ctx, name); err != nil {
				return err
			}
		default:
		}
	}
	return nil
}

// proc returns the service's current process.
func (p *phase) proc(name string) *loopstack.Proc {
	switch name {
	case "notifier":
		return p.s.Notifier
	case "contacts":
		return p.s.Contacts
	}
	return p.s.Workers
}

// startRetrying starts a service, and if it does not get ready (a dependency may be coming
// back), kills it and tries again, for a few minutes, as an orchestrator would.
func (p *phase) startRetrying(ctx context.Context, name string) error {
	start := map[string]func(context.Context, <-chan error) error{
		"notifier": p.s.StartNotifier, "contacts": p.s.StartContacts, "workers": p.s.StartWorkers,
	}[name]
	var err error
	for try := range 5 {
		sctx, cancel := context.WithTimeout(ctx, 40*time.Second)
		err = start(sctx, nil)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
		p.log("%s not ready (try %d): %v", name, try+1, firstLine(err.Error()))
		if proc := p.proc(name); proc != nil {
			proc.Kill()
		}
	}
	return fmt.Errorf("restart %s: %w", name, err)
}

// killWorkers kills the workers with SIGKILL mid-load, counts what they had in flight, and
// starts them again.
func (p *phase) killWorkers(ctx context.Context) error {
	p.s.Workers.Kill()
	ids, err := p.inFlight(ctx, time.Now())
	if err != nil {
		return fmt.Errorf("in flight at the kill: %w", err)
	}
	p.addBound(len(ids))
	p.count("kill-workers")
	p.log("SIGKILL workers: %d deliveries in flight; restarting", len(ids))
	return p.startRetrying(ctx, "workers")
}

// topicThenKillNotifier sends to the topic and kills the notifier right after the answer,
// while it fans the send out to the subscribers and publishes their deliveries.
func (p *phase) topicThenKillNotifier(ctx context.Context) error {
	id, err := p.sendTopic(ctx)
	if err != nil {
		return err
	}
	p.log("sent to topic %s (%d subscribers): topic send %s", topicName, topicSubscribers, id)
	return p.killNotifier(ctx)
}

func (p *phase) killNotifier(ctx context.Context) error {
	p.s.Notifier.Kill()
	p.count("kill-notifier")
	p.log("SIGKILL notifier; restarting")
	return p.startRetrying(ctx, "notifier")
}

func (p *phase) killContacts(ctx context.Context) error {
	p.s.Contacts.Kill()
	p.count("kill-contacts")
	p.log("SIGKILL contacts; restarting")
	return p.startRetrying(ctx, "contacts")
}

// restartNATS kills NATS node i, leaves it down for down, and starts it again on its store.
func (p *phase) restartNATS(ctx context.Context, i int, down time.Duration, fault string) error {
	node := p.s.NATS[i]
	node.Proc.Kill()
	p.count(fault)
	p.log("SIGKILL %s; down for %v", node.Name, down)
	if err := sleep(ctx, down); err != nil {
		return err
	}
	if err := p.s.StartNATSNode(ctx, i, p.s.Failed); err != nil {
		return fmt.Errorf("restart %s: %w", node.Name, err)
	}
	p.log("%s back", node.Name)
	return nil
}

// restartPostgres stops PostgreSQL in immediate mode (no checkpoint; crash recovery at the
// next start), leaves it down for down, and starts it again. The deliveries in flight at the
// stop bound the duplicates: those claimed before it and still unrecorded after it.
func (p *phase) restartPostgres(ctx context.Context, down time.Duration) error {
	before, err := p.inFlight(ctx, time.Now())
	if err != nil {
		return err
	}
	stopped := time.Now()
	if err := p.s.KillPostgres(); err != nil {
		return err
	}
	p.count("postgres-immediate")
	p.log("PostgreSQL stopped in immediate mode; down for %v", down)
	if err := sleep(ctx, down); err != nil {
		return err
	}
	if err := p.s.StartPostgres(ctx); err != nil {
		return err
	}
	after, err := p.inFlight(ctx, stopped)
	if err != nil {
		return err
	}
	for id := range after {
		before[id] = true
	}
	p.addBound(len(before))
	p.log("PostgreSQL back (crash recovery done): %d deliveries were in flight", len(before))
	return nil
}

// Provider misbehaviour. Each lasts a few seconds, short enough that no delivery uses up its
// attempts on it.

func (p *phase) provider5xx(ctx context.Context) error {
	prov := p.s.Prov
	prov.SendGrid.Fail(http.StatusServiceUnavailable, 40)
	prov.FCM.Fail(fcmfake.Unavailable, 20)
	prov.APNs.Fail(apnsfake.ErrorFor("InternalServerError"), 20)
	prov.Twilio.Fail(http.StatusInternalServerError, 20)
	p.count("provider-5xx")
	p.log("providers answer 5xx (the next 20-40 requests each)")
	err := sleep(ctx, 4*time.Second)
	prov.SendGrid.Fail(0, 0)
	prov.FCM.Fail(fcmfake.NoFailure, 0)
	prov.APNs.Fail(apnsfake.Error{}, 0)
	prov.Twilio.Fail(0, 0)
	return err
}

func (p *phase) provider429(ctx context.Context) error {
	prov := p.s.Prov
	prov.SendGrid.SetRetryAfter(time.Second)
	prov.SendGrid.Fail(http.StatusTooManyRequests, 40)
	prov.Twilio.SetRetryAfter(time.Second)
	prov.Twilio.Fail(http.StatusTooManyRequests, 40)
	prov.FCM.SetRetryAfter(time.Second)
	prov.FCM.Fail(fcmfake.QuotaExceeded, 20)
	prov.APNs.Fail(apnsfake.ErrorFor("TooManyRequests"), 20)
	p.count("provider-429")
	p.log("providers answer 429 with Retry-After: 1 (the next 20-40 requests each)")
	err := sleep(ctx, 4*time.Second)
	prov.SendGrid.Fail(0, 0)
	prov.Twilio.Fail(0, 0)
	prov.FCM.Fail(fcmfake.NoFailure, 0)
	prov.APNs.Fail(apnsfake.Error{}, 0)
	return err
}

// providerTimeout makes every provider answer later than the workers' send timeout, for a
// while: the workers give up on each call, and the fakes, seeing the request canceled, accept
// nothing.
func (p *phase) providerTimeout(ctx context.Context, sendTimeout time.Duration) error {
	prov := p.s.Prov
	slow := 3 * sendTimeout
	prov.SendGrid.SetDelay(slow)
	prov.Twilio.SetDelay(slow)
	prov.FCM.SetDelay(slow)
	prov.APNs.SetDelay(slow)
	p.count("provider-timeout")
	p.log("providers answer after %v (send timeout %v)", slow, sendTimeout)
	err := sleep(ctx, sendTimeout+2*time.Second)
	prov.SendGrid.SetDelay(providerLatency)
	prov.Twilio.SetDelay(providerLatency)
	prov.FCM.SetDelay(providerLatency)
	prov.APNs.SetDelay(providerLatency)
	return err
}

// dropAccepted is how many FCM messages one provider-drop fault accepts and then drops the
// answer of: each may be sent again, a duplicate the provider causes, not Herald.
const dropAccepted = 5

// providerDrop makes providers drop the connection after reading the request: SendGrid and
// Twilio without accepting the message, FCM also after accepting a few (the case in which
// any client that retries sends twice).
func (p *phase) providerDrop(ctx context.Context) error {
	prov := p.s.Prov
	prov.SendGrid.Drop(20)
	prov.Twilio.Drop(20)
	prov.FCM.Drop(10)
	prov.FCM.DropAccepted(dropAccepted)
	p.addBound(dropAccepted)
	p.count("provider-drop")
	p.log("providers drop the connection after reading the request (SendGrid, Twilio 20 each; FCM 10, and %d after accepting)", dropAccepted)
	err := sleep(ctx, 4*time.Second)
	prov.SendGrid.Drop(0)
	prov.Twilio.Drop(0)
	prov.FCM.Drop(0)
	prov.FCM.DropAccepted(0)
	return err
}

// emailFailover makes email's first provider answer 503 to every request for a while: its
// circuit opens and email goes through the second SendGrid; once it answers again, a probe
// brings email back to it. Neither may cause a duplicate: a 503 proves the message was not
// taken.
func (p *phase) emailFailover(ctx context.Context) error {
	prov := p.s.Prov
	prov.SendGrid.Fail(http.StatusServiceUnavailable, sendgridfake.Always)
	p.count("email-failover")
	p.log("the first email provider answers 503 to everything; email fails over to the second")
	err := sleep(ctx, 4*time.Second)
	prov.SendGrid.Fail(0, 0)
	return err
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
