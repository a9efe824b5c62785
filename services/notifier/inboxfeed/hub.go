// Package inboxfeed serves the in-app inbox's live feed: Server-Sent Events to browsers, one
// stream per open page, authorised by a user token. Each notifier holds one PostgreSQL
// connection that LISTENs for inbox changes (internal/inbox/postgres sends a NOTIFY in the
// transaction of each change, so it arrives on commit, at every replica) and fans each one out
// in memory to the streams of its user. A notification only wakes a stream: the stream then
// reads what is new after its own position, so a lost notification (a dropped connection, a
// restart) costs delay, never a message.
package inboxfeed

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Hub fans the inbox's NOTIFYs out to the streams of their users.
type Hub struct {
	// Connect opens the listening connection.
	Connect func(ctx context.Context) (*pgx.Conn, error)
	// Channel is the NOTIFY channel (internal/inbox/postgres.Channel).
	Channel string
	Log     *slog.Logger

	mu    sync.Mutex
	subs  map[string]map[*sub]struct{}
	ready chan struct{} // closed once the first LISTEN is in place
	once  sync.Once
}

type sub struct {
	wake chan struct{}
}

// NewHub returns a Hub; Run listens.
func NewHub(connect func(ctx context.Context) (*pgx.Conn, error), channel string, log *slog.Logger) *Hub {
	return &Hub{Connect: connect, Channel: channel, Log: log, subs: map[string]map[*sub]struct{}{}, ready: make(chan struct{})}
}

// Subscribe registers a stream of user. Its channel receives a value (coalesced) whenever the
// user's inbox may have changed; cancel unregisters it. count is how many streams the user
// has, this one included.
func (h *Hub) Subscribe(user string) (wake <-chan struct{}, count int, cancel func()) {
	s := &sub{wake: make(chan struct{}, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.subs[user] == nil {
		h.subs[user] = map[*sub]struct{}{}
	}
	h.subs[user][s] = struct{}{}
	return s.wake, len(h.subs[user]), func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.subs[user], s)
		if len(h.subs[user]) == 0 {
			delete(h.subs, user)
		}
	}
}

// Ready is closed once the hub listens; streams that start before it still see everything
// (they read from their position), only later.
func (h *Hub) Ready() <-chan struct{} { return h.ready }

func (h *Hub) wake(user string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs[user] {
		poke(s.wake)
	}
}

// wakeAll wakes every stream: after the listening connection was lost, any of them may have
// missed a notification.
func (h *Hub) wakeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ss := range h.subs {
		for s := range ss {
			poke(s.wake)
		}
	}
}

func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Run listens until ctx ends, reconnecting with a backoff when the connection fails.
func (h *Hub) Run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := h.listen(ctx)
		if ctx.Err() != nil {
			return
		}
		h.Log.Warn("inbox feed: listening connection lost; reconnecting", "err", err, "in", backoff)
		h.wakeAll()
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (h *Hub) listen(ctx context.Context) error {
	conn, err := h.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{h.Channel}.Sanitize()); err != nil {
		return err
	}
	h.once.Do(func() { close(h.ready) })
	h.wakeAll() // whatever happened while no connection listened
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		h.wake(n.Payload)
	}
}
