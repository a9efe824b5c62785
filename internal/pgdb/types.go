package pgdb

import (
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
)

// pgx encodes a uuid.UUID through its driver.Valuer, as a string it then parses again, and a
// slice or a pointer through reflection: on the hot path, most of a statement's cost in the
// client. These give pgx its own types instead, which it encodes directly.

// UUID returns id as pgx's own type.
func UUID(id uuid.UUID) pgtype.UUID { return pgtype.UUID{Bytes: id, Valid: true} }

// UUIDs returns ids as an array parameter pgx encodes without reflection.
func UUIDs(ids []uuid.UUID) pgtype.FlatArray[pgtype.UUID] {
	out := make(pgtype.FlatArray[pgtype.UUID], len(ids))
	for i, id := range ids {
		out[i] = UUID(id)
	}
	return out
}

// Text returns s as a text value, NULL when s is empty.
func Text(s string) pgtype.Text { return pgtype.Text{String: s, Valid: s != ""} }

// Time returns t as a timestamptz value, NULL when t is nil.
func Time(t *time.Time) pgtype.Timestamptz {
	if t == nil {
		return pgtype.Timestamptz{}
	}
	return pgtype.Timestamptz{Time: *t, Valid: true}
}
