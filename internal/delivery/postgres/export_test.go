package postgres

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
)

// ClaimMerged claims ids for each call as if the calls had come at once and been merged into
// one statement, which under load they are.
func (s *Store) ClaimMerged(ctx context.Context, worker string, lease time.Duration, calls ...[]uuid.UUID) ([][]delivery.Delivery, error) {
	cs := make([]claimCall, len(calls))
	for i, ids := range calls {
		cs[i] = claimCall{worker: worker, lease: lease, ids: ids}
	}
	out, errs, err := s.claimBatch(ctx, cs)
	if err != nil {
		return nil, err
	}
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Statements whose plans the tests check.
const (
	ClaimSQL       = claimSQL
	UnpublishedSQL = unpublishedSQL
	ReleaseSQL     = releaseSQL
	CancelSQL      = cancelSQL
	DecideStepsSQL = decideStepsSQL
	RecordSQL      = recordSQL
)
