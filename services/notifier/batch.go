package notifier

import (
	"context"
	"sync"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/errs"
)

// MaxBatch is how many recipients one SendBatch may carry.
const MaxBatch = 1000

// batchParallelism bounds the recipients of one batch decided at once, so that one batch cannot
// take every database connection (idempotency keys are looked up one by one).
const batchParallelism = 16

// BatchResult is one recipient's outcome: a result, or the error a Send would have answered.
type BatchResult struct {
	Result *SendResult
	Err    error
}

// SendBatch sends each request as Send would and answers for each, in order; one bad request
// does not fail the others. The batch counts as one request against the app's rate.
// Errors (for the whole batch): Invalid (too many), Exhausted.
func (s *Sender) SendBatch(ctx context.Context, caller appkey.Caller, reqs []*SendRequest) ([]BatchResult, error) {
	var v errs.Violations
	if len(reqs) == 0 {
		v.Add("recipients", "is required")
	}
	v.Count("recipients", len(reqs), MaxBatch)
	if err := v.Err(); err != nil {
		return nil, err
	}
	if err := s.admit(ctx, caller); err != nil {
		return nil, err
	}
	return s.sendAll(ctx, caller, reqs), nil
}

// sendAll decides and commits reqs together, and answers for each, in order. SendBatch and
// the fan-out of a topic send (topic.go) both send through it.
func (s *Sender) sendAll(ctx context.Context, caller appkey.Caller, reqs []*SendRequest) []BatchResult {
	// Each recipient is decided on its own (their lookups in the contacts service share calls),
	// then all are committed together: one transaction and one message per channel for the
	// batch, not one per recipient.
	out := make([]BatchResult, len(reqs))
	drafts := make([]*draft, len(reqs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, batchParallelism)
	for i, req := range reqs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d, res, err := s.prepare(ctx, caller, req)
			drafts[i], out[i] = d, BatchResult{Result: res, Err: err}
		}()
	}
	wg.Wait()
	var ns []*Notification
	var at []int
	for i, d := range drafts {
		if d != nil {
			ns, at = append(ns, d.n), append(at, i)
		}
	}
	created, failed := s.committer().DoAll(ctx, ns)
	for j, i := range at {
		res, err := s.finish(ctx, caller, reqs[i], drafts[i], created[j], failed[j])
		out[i] = BatchResult{Result: res, Err: err}
	}
	return out
}

// Explain decides a Send without storing or sending anything, and returns the notification it
// would create: each delivery's state (queued, scheduled or skipped), its reason, its send time
// and its rendered content. Frequency caps are reported as they stand, without counting.
// For a user recipient the answer shows the user's settings and suppressions, so the caller
// needs contacts read access (sending to the user does not); it is checked before anything
// else, so that a refusal tells nothing about the user.
// Errors: as Send's; PermissionDenied for a user recipient without contacts read access.
func (s *Sender) Explain(ctx context.Context, caller appkey.Caller, req *SendRequest) (*Notification, error) {
	if req.UserID != "" {
		if err := caller.AllowContacts(appkey.ContactsRead); err != nil {
			return nil, err
		}
	}
	now := s.now()
	if err := validate(req, now, s.Templates.Limits); err != nil {
		return nil, err
	}
	d, err := s.plan(ctx, caller, req, now)
	if err != nil {
		return nil, err
	}
	s.peekCaps(ctx, d, now)
	holdLaterSteps(d.n, now, s.RepublishAfter)
	explainDigests(ctx, s.Digests, d.n) // when the open digest goes: digest.go
	for _, dl := range d.n.Deliveries { // Explain shows links as written, without short links
		dl.Content = unmarkContent(dl.Content)
	}
	return d.n, nil
}
