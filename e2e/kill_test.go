package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/natstest"
	"github.com/heraldhq/herald/internal/queue"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

// binDir is the temp dir that build puts binaries in; TestMain removes it.
var binDir = sync.OnceValues(func() (string, error) { return os.MkdirTemp("", "herald-e2e-bin-") })

// build builds a binary of the repository once per test binary and returns its path.
func build(pkg string) func() (string, error) {
	return sync.OnceValues(func() (string, error) {
		dir, err := binDir()
		if err != nil {
			return "", err
		}
		bin := filepath.Join(dir, filepath.Base(pkg))
		cmd := exec.Command("go", "build", "-o", bin, pkg)
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
		return bin, nil
	})
}

var (
	buildWorkers   = build("github.com/heraldhq/herald/services/workers/cmd/workers")
	buildHeraldctl = build("github.com/heraldhq/herald/cmd/heraldctl")
)

// workersProcess is the workers binary running as its own OS process.
type workersProcess struct {
	cmd    *exec.Cmd
	log    bytes.Buffer
	exited chan struct{}
}

func (s *stack) startWorkersProcess(t *testing.T) *workersProcess {
	t.Helper()
	bin, err := buildWorkers()
	if err != nil {
		t.Fatal(err)
	}
	c := s.workersConfig()
	p := &workersProcess{exited: make(chan struct{})}
	p.cmd = exec.Command(bin,
		"--http-addr", c.HTTPAddr, "--channels", c.Channels,
		"--email-provider", c.EmailProvider, "--sendgrid-base-url", c.SendGridBaseURL,
		"--email-from", c.EmailFrom, "--concurrency", strconv.Itoa(c.Concurrency),
		"--batch-size", strconv.Itoa(c.BatchSize), "--lease", c.Lease.String(),
		"--send-timeout", c.SendTimeout.String(), "--ack-wait", c.AckWait.String(),
		"--max-attempts", strconv.Itoa(c.MaxAttempts), "--base-backoff", c.BaseBackoff.String(),
		"--max-backoff", c.MaxBackoff.String(), "--breaker-failures", strconv.Itoa(c.BreakerFailures),
		"--breaker-cooldown", c.BreakerCooldown.String(), "--sim-url", c.SimURL, "--contacts-addr", c.ContactsAddr,
		"--unsubscribe-url", c.UnsubscribeURL, "--log-level", "warn")
	// Configuration through the environment too, as a deployment would pass secrets.
	p.cmd.Env = append(os.Environ(),
		"HERALD_DATABASE_URL="+c.DatabaseURL, "HERALD_NATS_URL="+c.NATSURL,
		"HERALD_SENDGRID_API_KEY="+c.SendGridAPIKey, "HERALD_CONTACTS_KEY="+c.ContactsKey,
		"HERALD_LINK_KEYS="+c.LinkKeys)
	p.cmd.Stdout, p.cmd.Stderr = &p.log, &p.log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("workers process log:\n%s", p.log.String())
		}
	})
	return p
}

func (p *workersProcess) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// TestWorkersKilledMidSend kills the workers process with SIGKILL while 1,000 emails are queued
// or in flight, starts it again, and checks that every email reaches the provider and is
// recorded SENT, and that the only emails sent twice are ones in flight at the kill.
func TestWorkersKilledMidSend(t *testing.T) {
	const total = 1000
	s := startStack(t, stackOptions{noWorkers: true})
	s.fake.SetDelay(10 * time.Millisecond) // so that the kill finds sends in flight
	ctx := context.Background()

	ids := make([]string, total)
	var wg sync.WaitGroup
	errs := make(chan error, total)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total; i += 8 {
				res, err := s.notify.Send(ctx, emailRequest(fmt.Sprintf("user%d@example.com", i)))
				if err != nil {
					errs <- err
					return
				}
				ids[i] = res.Deliveries[0].DeliveryId
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	first := s.startWorkersProcess(t)
	held, sentAtKill := killMidSend(t, s, first, total/4)
	s.startWorkersProcess(t)
	checkSentOnce(t, s, ids, held, sentAtKill)
}

// killMidSend kills the workers process once the provider has received at least n messages,
// and returns the deliveries it held then (claimed, not recorded), and how many messages the
// provider had received.
func killMidSend(t *testing.T, s *stack, p *workersProcess, n int) (map[string]bool, int) {
	t.Helper()
	waitFor(t, "the workers process to send some emails", time.Minute, func() (bool, error) {
		return len(s.fake.Messages()) >= n, nil
	})
	p.kill()
	sentAtKill := len(s.fake.Messages())
	// A process killed with SIGKILL writes nothing more: what it had claimed and not recorded
	// is exactly what it may have sent without our knowing.
	rows, _ := s.pool.Query(context.Background(), `SELECT id FROM delivery.deliveries WHERE state = 'sending'`)
	inFlight, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]bool{}
	for _, id := range inFlight {
		held[id.String()] = true
	}
	return held, sentAtKill
}

// checkSentOnce waits until every delivery of ids is recorded sent, and checks that each
// reached the provider, and more than once only if it was held at the kill.
func checkSentOnce(t *testing.T, s *stack, ids []string, held map[string]bool, sentAtKill int) {
	t.Helper()
	if sentAtKill >= len(ids) {
		t.Fatalf("all %d emails were sent before the kill; the test proves nothing", sentAtKill)
	}
	waitFor(t, "every delivery to be recorded sent", 2*time.Minute, func() (bool, error) {
		var sent int
		err := s.pool.QueryRow(context.Background(), `SELECT count(*) FROM delivery.deliveries WHERE state = 'sent' AND id = ANY($1)`,
			ids).Scan(&sent)
		return sent == len(ids), err
	})
	duplicates := 0
	for _, id := range ids {
		switch n := s.fake.Count(id); {
		case n == 0:
			t.Errorf("delivery %s recorded sent but never reached the provider", id)
		case n > 1:
			duplicates += n - 1
			if !held[id] {
				t.Errorf("delivery %s was sent %d times but was not in flight at the kill", id, n)
			}
		}
	}
	t.Logf("sent before the kill: %d; in flight at the kill: %d; duplicates: %d", sentAtKill, len(held), duplicates)
	if duplicates > len(held) {
		t.Errorf("%d duplicates, more than the %d deliveries in flight at the kill", duplicates, len(held))
	}
	if got := len(s.fake.Messages()); got != len(ids)+duplicates {
		t.Errorf("the provider received %d messages, want %d", got, len(ids)+duplicates)
	}
}

// TestWorkerKilledMidBatch sends 1,000 emails with one SendBatch, which the notifier commits
// together and queues as one message (queue.MaxBatch ids); kills the workers process with SIGKILL in the middle of
// that batch; and checks that once workers run again every delivery of the batch is recorded
// sent, each reaching the provider once but for those in flight at the kill.
func TestWorkerKilledMidBatch(t *testing.T) {
	const total = 1000
	s := startStack(t, stackOptions{noWorkers: true})
	s.fake.SetDelay(10 * time.Millisecond) // so that the kill finds sends in flight
	ctx := context.Background()

	req := &heraldv1.SendBatchRequest{Category: "account",
		Message: &heraldv1.SendBatchRequest_Content{Content: &heraldv1.Content{Subject: "Hi", Body: "Hello"}}}
	for i := range total {
		req.Recipients = append(req.Recipients, &heraldv1.BatchRecipient{Recipient: &heraldv1.Recipient{
			Kind: &heraldv1.Recipient_Address{Address: &heraldv1.Address{Email: fmt.Sprintf("batch%d@example.com", i)}}}})
	}
	res, err := s.notify.SendBatch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range res.Results {
		if r.Error != nil {
			t.Fatalf("a recipient was refused: %v", r.Error)
		}
		ids = append(ids, r.GetResponse().GetDeliveries()[0].GetDeliveryId())
	}
	js := natstest.Connect(t, s.natsURL)
	stream, err := js.Stream(ctx, queue.Stream(delivery.Email))
	if err != nil {
		t.Fatal(err)
	}
	if info, err := stream.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Fatalf("the email queue holds %d messages (%v), want the batch as one", info.State.Msgs, err)
	}

	first := s.startWorkersProcess(t)
	held, sentAtKill := killMidSend(t, s, first, total/4)
	s.startWorkersProcess(t)
	checkSentOnce(t, s, ids, held, sentAtKill)
}
