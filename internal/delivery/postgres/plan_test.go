package postgres_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/delivery/postgres"
)

// TestPlans checks that the statements of the hot path find their rows by id (or notification),
// also in the plans PostgreSQL makes when its statistics are stale: made before a backlog grew,
// they believe that nothing is queued, so that a scan of every queued delivery (a partial index
// over the state, or the deadlines) looks cheaper than the ids. Such a plan costs a millisecond a
// delivery once the backlog is there (seen in the benchmark).
func TestPlans(t *testing.T) {
	s, pool := newStore(t)
	ctx := t.Context()
	now := time.Now()
	create := func(n int) []uuid.UUID {
		var ids []uuid.UUID
		for range n / 1000 {
			var ds []delivery.Delivery
			for range 1000 {
				id := uuid.Must(uuid.NewV7())
				ids = append(ids, id)
				due := now.Add(time.Hour)
				ds = append(ds, delivery.Delivery{ID: id, NotificationID: id, Channel: delivery.Email, To: "a@example.com",
					Category: "account", Priority: delivery.Normal, State: delivery.Queued, DueAt: &due,
					ExpiresAt: now.Add(24 * time.Hour), CreatedAt: now})
			}
			if err := s.Create(ctx, ds); err != nil {
				t.Fatal(err)
			}
		}
		return ids
	}
	// Statistics taken when everything was sent: then the backlog.
	create(2000)
	for _, q := range []string{`UPDATE delivery.deliveries SET state = 'sent', due_at = NULL`, `ANALYZE delivery.deliveries`} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	ids := create(50_000)
	var lit []string
	for _, id := range ids[:64] {
		lit = append(lit, id.String())
	}
	some := `'{` + strings.Join(lit, ",") + `}'`

	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SET plan_cache_mode = force_generic_plan`); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, sql, types, args, index string
	}{
		{"claim", postgres.ClaimSQL, "text, interval, uuid[]", `'w', '1 minute', ` + some, "deliveries_pkey"},
		{"unpublished", postgres.UnpublishedSQL, "uuid[], timestamptz", some + `, now()`, "deliveries_pkey"},
		{"release", postgres.ReleaseSQL, "text, uuid[], interval", `'w', ` + some + `, '1 minute'`, "deliveries_pkey"},
		{"record", postgres.RecordSQL, "text, uuid[], text[], text[], text[], text[], text[], timestamptz[], int[], " +
			"text[], timestamptz[], bigint[], int[], bool[]",
			`'w', ` + some + `, '{sent}', '{""}', '{""}', '{p}', '{m}', '{NULL}', '{1}', '{sent}', '{2030-01-01}', '{5}', ` +
				`'{0}', '{t}'`, "deliveries_pkey"},
		{"decide_steps", postgres.DecideStepsSQL, "timestamptz, interval, int", `now(), '1 minute', 100`, "deliveries_steps_due"},
		{"cancel", postgres.CancelSQL, "uuid[], timestamptz", some + `, now()`, "deliveries_notification"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := conn.Exec(ctx, `PREPARE `+tc.name+`(`+tc.types+`) AS `+tc.sql); err != nil {
				t.Fatal(err)
			}
			rows, err := conn.Query(ctx, `EXPLAIN EXECUTE `+tc.name+`(`+tc.args+`)`)
			if err != nil {
				t.Fatal(err)
			}
			var plan []string
			for rows.Next() {
				var line string
				if err := rows.Scan(&line); err != nil {
					t.Fatal(err)
				}
				plan = append(plan, line)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			text := strings.Join(plan, "\n")
			if !strings.Contains(text, "Index Scan using "+tc.index+" on deliveries") ||
				strings.Contains(text, "Seq Scan on deliveries") || strings.Contains(text, "deliveries_open") ||
				strings.Contains(text, "deliveries_due") {
				t.Errorf("plan:\n%s\nwant the deliveries found through %s alone", text, tc.index)
			}
		})
	}
}
