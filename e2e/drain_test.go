package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/heraldhq/herald/internal/browsertest"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

// TestQueueDrainsWhereOperatorsLook is the operations issue's check: 10,000 deliveries queued
// against a slow provider; /metrics, heraldctl queues and the status page (in a real browser)
// all show the depth, then show it falling to zero once workers run.
func TestQueueDrainsWhereOperatorsLook(t *testing.T) {
	const total = 10_000
	// Queueing takes longer than the tests' usual 2 s re-publish deadline; re-publishes would
	// count each waiting delivery more than once.
	s := startStack(t, stackOptions{noWorkers: true, republishAfter: 10 * time.Minute})
	s.fake.SetDelay(5 * time.Millisecond) // a slow provider: the drain takes seconds
	ctx := context.Background()

	var wg sync.WaitGroup
	errs := make(chan error, total/1000)
	for b := range total / 1000 {
		wg.Go(func() {
			req := &heraldv1.SendBatchRequest{Category: "account",
				Message: &heraldv1.SendBatchRequest_Content{Content: &heraldv1.Content{Subject: "Hi", Body: "Hello"}}}
			for i := range 1000 {
				req.Recipients = append(req.Recipients, &heraldv1.BatchRecipient{Recipient: &heraldv1.Recipient{
					Kind: &heraldv1.Recipient_Address{Address: &heraldv1.Address{Email: fmt.Sprintf("u%d-%d@example.com", b, i)}}}})
			}
			res, err := s.notify.SendBatch(ctx, req)
			if err != nil {
				errs <- err
				return
			}
			for _, r := range res.Results {
				if r.Error != nil {
					errs <- fmt.Errorf("a recipient was refused: %v", r.Error)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	admin := heraldv1.NewAdminServiceClient(s.conn)
	emailDepth := func() (pending, inFlight int64) {
		qs, err := admin.GetQueueStats(ctx, &heraldv1.GetQueueStatsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range qs.Channels {
			if c.Channel == heraldv1.Channel_CHANNEL_EMAIL {
				return c.Pending, c.InFlight
			}
		}
		return -1, -1
	}
	waitFor(t, "the queue to show every delivery", time.Minute, func() (bool, error) {
		p, _ := emailDepth()
		return p == total, nil
	})
	if m := metric(t, s, `herald_queue_pending{channel="email"}`); m != total {
		t.Fatalf("/metrics shows %v pending, want %d", m, total)
	}
	if out := heraldctlQueues(t, s); !regexp.MustCompile(`email\s+` + strconv.Itoa(total) + `\s`).MatchString(out) {
		t.Fatalf("heraldctl queues shows:\n%s", out)
	}

	page := browsertest.New(t, 0)
	cell := `#queues td[data-channel="email"][data-field="pending"]`
	if err := chromedp.Do(page,
		chromedp.Navigate("http://"+s.notifier.HTTPAddr()+"/status"),
		chromedp.WaitVisible(chromedp.CSS(cell)),
	); err != nil {
		t.Fatal(err)
	}
	shown, err := chromedp.Run(page, chromedp.Text(chromedp.CSS(cell)))
	if err != nil {
		t.Fatal(err)
	}
	if digits(shown) != total {
		t.Fatalf("the status page shows %q pending, want %d", shown, total)
	}

	s.startWorkers(t)
	seen := map[int64]bool{}
	waitFor(t, "the queue to drain", 5*time.Minute, func() (bool, error) {
		p, f := emailDepth()
		seen[p] = true
		return p == 0 && f == 0, nil
	})
	falling := 0
	for p := range seen {
		if p > 0 && p < total {
			falling++
		}
	}
	if falling == 0 {
		t.Errorf("no sample caught the queue between full and empty: %v", seen)
	}
	if m := metric(t, s, `herald_queue_pending{channel="email"}`); m != 0 {
		t.Fatalf("/metrics shows %v pending after the drain", m)
	}
	if out := heraldctlQueues(t, s); !regexp.MustCompile(`email\s+0\s+0\s`).MatchString(out) {
		t.Fatalf("heraldctl queues after the drain shows:\n%s", out)
	}
	// The page polls on its own: wait for it to show the empty queue and the line to move.
	if err := chromedp.Do(page, chromedp.Poll[chromedp.Void](
		`document.querySelector('`+cell+`').textContent.trim() === "0"`, chromedp.WithPollingTimeout(time.Minute))); err != nil {
		t.Fatal(err)
	}
	points, err := chromedp.Run(page, chromedp.Evaluate[string](
		`document.querySelector('#series polyline[data-channel="email"]').getAttribute('points')`))
	if err != nil {
		t.Fatal(err)
	}
	if len(strings.Fields(points)) < 2 {
		t.Fatalf("the email line has points %q", points)
	}
	if n := len(s.fake.Messages()); n < total {
		t.Fatalf("the provider received %d emails, want %d", n, total)
	}
}

func digits(s string) int64 {
	n, _ := strconv.ParseInt(strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, s), 10, 64)
	return n
}

// metric reads one sample from the notifier's /metrics.
func metric(t *testing.T, s *stack, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(get(t, "http://"+s.notifier.HTTPAddr()+"/metrics"), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("/metrics has no %s", series)
	return 0
}

// heraldctlQueues runs `heraldctl queues` against the stack, as an operator would.
func heraldctlQueues(t *testing.T, s *stack) string {
	t.Helper()
	bin, err := buildHeraldctl()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "--addr", s.notifier.GRPCAddr(), "--key", s.key, "--env-file", "/nonexistent", "queues").CombinedOutput()
	if err != nil {
		t.Fatalf("heraldctl queues: %v\n%s", err, out)
	}
	return string(out)
}
