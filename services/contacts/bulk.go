package contacts

import (
	"context"
	"fmt"

	"github.com/heraldhq/herald/internal/errs"
)

// BulkStore stores many users in one transaction. The postgres package implements it.
type BulkStore interface {
	// UpsertUsers creates or replaces each user's contact data, all or none.
	UpsertUsers(ctx context.Context, us []*User) error
}

// BatchUpsertUsers validates and normalises up to 1,000 users as UpsertUser does each, and
// stores them together: the bulk path for importing users. Errors: Invalid (field violations
// named users[i].<field>), FailedPrecondition (a store without the bulk path).
func (s *Service) BatchUpsertUsers(ctx context.Context, us []*User) error {
	var v errs.Violations
	if len(us) == 0 {
		v.Add("users", "is required")
	}
	if !v.Count("users", len(us), maxBatch) {
		return v.Err()
	}
	seen := make(map[string]bool, len(us))
	for i, u := range us {
		field := fmt.Sprintf("users[%d]", i)
		checkUser(&v, field, u)
		if seen[u.ID] {
			v.Add(field+".user_id", "is repeated")
		}
		seen[u.ID] = true
	}
	if err := v.Err(); err != nil {
		return err
	}
	bs, ok := s.Store.(BulkStore)
	if !ok {
		return errs.E(errs.FailedPrecondition, "this contacts store has no bulk path")
	}
	return bs.UpsertUsers(ctx, us)
}
