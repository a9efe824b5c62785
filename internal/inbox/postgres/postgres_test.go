package postgres_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/internal/ids"
	"github.com/heraldhq/herald/internal/inbox"
	"github.com/heraldhq/herald/internal/inbox/postgres"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func migrate(ctx context.Context, url string) error {
	pool, err := pgdb.Open(ctx, url, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	return postgres.Migrate(ctx, pool, slog.New(slog.DiscardHandler))
}

func open(t testing.TB) (*postgres.Store, *pgxpool.Pool, string) {
	t.Helper()
	url := pgtest.DB(t, "inbox", migrate)
	pool, err := pgdb.Open(t.Context(), url, 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return postgres.New(pool), pool, url
}

func message(user, category, title string) *inbox.Message {
	return &inbox.Message{ID: uuid.Must(uuid.NewV7()), UserID: user, NotificationID: uuid.Must(uuid.NewV7()),
		Category: category, Title: title, Body: "body of " + title, Data: map[string]any{"k": title},
		CreatedAt: time.Now().UTC().Truncate(time.Microsecond)}
}

func deliver(t *testing.T, s *postgres.Store, m *inbox.Message) {
	t.Helper()
	stored, err := s.Deliver(t.Context(), m)
	if err != nil || !stored {
		t.Fatalf("Deliver = %v, %v", stored, err)
	}
}

func titles(ms []inbox.Message) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Title)
	}
	return out
}

// TestDeliverOnce: a redelivered message (a retried or redelivered delivery) is stored once,
// and tells the feed only the first time.
func TestDeliverOnce(t *testing.T) {
	s, pool, url := open(t)
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+postgres.Channel); err != nil {
		t.Fatal(err)
	}
	m := message("u1", "news", "a")
	deliver(t, s, m)
	again := *m
	stored, err := s.Deliver(ctx, &again)
	if err != nil || stored {
		t.Fatalf("second Deliver = %v, %v; want false, nil", stored, err)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM inbox.messages WHERE id = $1`, m.ID).Scan(&n); err != nil || n != 1 {
		t.Fatalf("rows = %d, %v", n, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	note, err := conn.WaitForNotification(wctx)
	if err != nil || note.Payload != "u1" {
		t.Fatalf("notification = %+v, %v", note, err)
	}
	wctx2, cancel2 := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel2()
	if note, err := conn.WaitForNotification(wctx2); err == nil {
		t.Fatalf("a second notification for a redelivery: %+v", note)
	}
	got, err := s.After(ctx, "u1", 0, 10)
	if err != nil || len(got) != 1 || got[0].Data["k"] != "a" || got[0].Body != "body of a" || got[0].Seq != 1 {
		t.Fatalf("After = %+v, %v", got, err)
	}
}

func TestListAndMarks(t *testing.T) {
	s, _, _ := open(t)
	ctx := t.Context()
	var ms []*inbox.Message
	for i := range 5 {
		cat := "news"
		if i%2 == 1 {
			cat = "billing"
		}
		m := message("u1", cat, fmt.Sprint("m", i))
		deliver(t, s, m)
		ms = append(ms, m)
	}
	deliver(t, s, message("u2", "news", "other"))
	now := time.Now()

	page, err := s.List(ctx, inbox.Query{UserID: "u1", Limit: 2})
	if err != nil || !slices.Equal(titles(page), []string{"m4", "m3"}) {
		t.Fatalf("first page = %v, %v", titles(page), err)
	}
	page, err = s.List(ctx, inbox.Query{UserID: "u1", Limit: 2, Before: page[1].Seq})
	if err != nil || !slices.Equal(titles(page), []string{"m2", "m1"}) {
		t.Fatalf("second page = %v, %v", titles(page), err)
	}

	// Another user's id changes nothing.
	c, err := s.MarkRead(ctx, "u2", []uuid.UUID{ms[0].ID}, now)
	if err != nil || len(c.Marked) != 0 || c.Unread != 1 {
		t.Fatalf("MarkRead of another user's message = %+v, %v", c, err)
	}
	c, err = s.MarkRead(ctx, "u1", []uuid.UUID{ms[0].ID, ms[1].ID}, now)
	if err != nil || len(c.Marked) != 2 || c.Unread != 3 {
		t.Fatalf("MarkRead = %+v, %v", c, err)
	}
	c, err = s.MarkRead(ctx, "u1", []uuid.UUID{ms[0].ID}, now)
	if err != nil || len(c.Marked) != 0 || c.Unread != 3 {
		t.Fatalf("MarkRead again = %+v, %v", c, err)
	}
	c, err = s.Archive(ctx, "u1", []uuid.UUID{ms[4].ID}, now)
	if err != nil || len(c.Marked) != 1 || c.Unread != 2 {
		t.Fatalf("Archive = %+v, %v", c, err)
	}

	for name, tc := range map[string]struct {
		q    inbox.Query
		want []string
	}{
		"default hides archived": {inbox.Query{UserID: "u1"}, []string{"m3", "m2", "m1", "m0"}},
		"with archived":          {inbox.Query{UserID: "u1", IncludeArchived: true}, []string{"m4", "m3", "m2", "m1", "m0"}},
		"unread":                 {inbox.Query{UserID: "u1", Read: inbox.Unread}, []string{"m3", "m2"}},
		"read":                   {inbox.Query{UserID: "u1", Read: inbox.Read}, []string{"m1", "m0"}},
		"category":               {inbox.Query{UserID: "u1", Category: "billing"}, []string{"m3", "m1"}},
		"unread in category":     {inbox.Query{UserID: "u1", Category: "news", Read: inbox.Unread}, []string{"m2"}},
		"other user":             {inbox.Query{UserID: "u2"}, []string{"other"}},
		"nobody":                 {inbox.Query{UserID: "u3"}, nil},
	} {
		got, err := s.List(ctx, tc.q)
		if err != nil || !slices.Equal(titles(got), tc.want) {
			t.Errorf("%s: List = %v, %v; want %v", name, titles(got), err, tc.want)
		}
	}

	unread, err := s.Unread(ctx, "u1", nil, "", 10)
	if err != nil || !slices.Equal(titles(unread), []string{"m2", "m3"}) {
		t.Fatalf("Unread(every one) = %v, %v", titles(unread), err)
	}
	unread, err = s.Unread(ctx, "u1", []uuid.UUID{ms[0].ID, ms[2].ID}, "", 10)
	if err != nil || !slices.Equal(titles(unread), []string{"m2"}) {
		t.Fatalf("Unread(ids) = %v, %v", titles(unread), err)
	}
	unread, err = s.Unread(ctx, "u1", nil, "billing", 10)
	if err != nil || !slices.Equal(titles(unread), []string{"m3"}) {
		t.Fatalf("Unread(billing) = %v, %v", titles(unread), err)
	}
	// Marking what Unread found, as the notifier's MarkAllRead does.
	c, err = s.MarkRead(ctx, "u1", []uuid.UUID{unread[0].ID}, now)
	if err != nil || len(c.Marked) != 1 || c.Unread != 1 {
		t.Fatalf("MarkRead(billing's unread) = %+v, %v", c, err)
	}
	if unread, err = s.Unread(ctx, "u1", nil, "", 10); err != nil || !slices.Equal(titles(unread), []string{"m2"}) {
		t.Fatalf("Unread after = %v, %v", titles(unread), err)
	}
	if n, err := s.UnreadCount(ctx, "u2"); err != nil || n != 1 {
		t.Fatalf("UnreadCount(u2) = %d, %v", n, err)
	}
}

// TestConcurrentExact: 50 senders and 50 readers on one user at once. Every message is
// stored once with its own seq (no gaps when nothing is redelivered), the seqs a reader sees
// committed are complete below their maximum (the feed's resume rests on that), and the unread
// count is exact at the end.
func TestConcurrentExact(t *testing.T) {
	s, _, _ := open(t)
	ctx := t.Context()
	const senders, each = 50, 10
	var wg sync.WaitGroup
	errc := make(chan error, 200)
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for range 50 {
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				all, err := s.After(ctx, "u", 0, senders*each)
				if err != nil {
					errc <- err
					return
				}
				for i, m := range all {
					if m.Seq != int64(i+1) {
						errc <- fmt.Errorf("reader saw seq %d at place %d: a gap below a committed seq", m.Seq, i+1)
						return
					}
				}
				if len(all) > 0 {
					if _, err := s.MarkRead(ctx, "u", []uuid.UUID{all[len(all)-1].ID}, time.Now()); err != nil {
						errc <- err
						return
					}
				}
			}
		})
	}
	for range senders {
		wg.Go(func() {
			for range each {
				if _, err := s.Deliver(ctx, message("u", "news", "x")); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	all, err := s.After(ctx, "u", 0, 1000)
	if err != nil || len(all) != senders*each {
		t.Fatalf("stored %d, %v; want %d", len(all), err, senders*each)
	}
	var unread int64
	for _, m := range all {
		if m.ReadAt == nil {
			unread++
		}
	}
	if n, err := s.UnreadCount(ctx, "u"); err != nil || n != unread {
		t.Fatalf("UnreadCount = %d, %v; the rows say %d", n, err, unread)
	}
}

// TestPruneMessages: messages whose Sends were accepted before the cutoff go, in batches; the
// others, and the users' feed positions, stay.
func TestPruneMessages(t *testing.T) {
	s, pool, _ := open(t)
	ctx := t.Context()
	now := time.Now()
	for i, age := range []time.Duration{100 * 24 * time.Hour, 95 * 24 * time.Hour, 91 * 24 * time.Hour, time.Hour} {
		m := message("u", "news", fmt.Sprint("m", i))
		m.ID = ids.NewV7At(now.Add(-age))
		deliver(t, s, m)
	}
	cutoff := now.Add(-90 * 24 * time.Hour)
	var total int
	from := time.Unix(0, 0)
	for {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n, last, err := postgres.PruneMessages(ctx, tx, from, cutoff, 2)
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		total += n
		if n < 2 {
			break
		}
		from = last
	}
	left, err := s.List(ctx, inbox.Query{UserID: "u"})
	if err != nil || total != 3 || !slices.Equal(titles(left), []string{"m3"}) {
		t.Fatalf("pruned %d, left %v, %v; want 3 pruned, m3 left", total, titles(left), err)
	}
	if head, err := s.Head(ctx, "u"); err != nil || head != 4 {
		t.Fatalf("Head = %d, %v; the feed position must stay at 4", head, err)
	}
}
