package notifier_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/services/notifier"
	"github.com/heraldhq/herald/services/notifier/notifiertest"
)

var _ notifier.TopicStore = (*fakeTopics)(nil)

// fakeTopics keeps topic sends in memory with the postgres store's lease rules: a claim takes
// a topic send that is fanning out and not leased; an advance needs the lease and the cursor
// it read. failAdvance, when set, is asked before each advance: true fails it after the page
// was committed, as a crash between the page's commit and the cursor's would.
type fakeTopics struct {
	mu          sync.Mutex
	sends       map[uuid.UUID]*notifier.TopicSend
	owner       map[uuid.UUID]string
	failAdvance func(cursor string) bool
	advances    int
}

func (f *fakeTopics) CreateTopicSend(_ context.Context, n *notifier.Notification, ts *notifier.TopicSend) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sends == nil {
		f.sends, f.owner = map[uuid.UUID]*notifier.TopicSend{}, map[uuid.UUID]string{}
	}
	c := *ts
	f.sends[ts.ID] = &c
	return true, nil
}

func (f *fakeTopics) TopicSend(_ context.Context, id uuid.UUID, _ bool) (*notifier.TopicSend, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ts, ok := f.sends[id]
	if !ok {
		return nil, errs.E(errs.NotFound, "topic send not found")
	}
	c := *ts
	return &c, nil
}

func (f *fakeTopics) ClaimTopicSend(_ context.Context, owner string, _ time.Duration) (*notifier.TopicSend, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, ts := range f.sends {
		if ts.State == notifier.TopicFanningOut && f.owner[id] == "" {
			f.owner[id] = owner
			c := *ts
			return &c, nil
		}
	}
	return nil, nil
}

func (f *fakeTopics) AdvanceTopicSend(_ context.Context, ts *notifier.TopicSend, owner, next string, add notifier.TopicCounts, done bool, _ time.Duration) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failAdvance != nil && add != (notifier.TopicCounts{}) && f.failAdvance(ts.Cursor) {
		return false, errs.E(errs.Unavailable, "the database went away")
	}
	stored := f.sends[ts.ID]
	if f.owner[ts.ID] != owner || stored.Cursor != ts.Cursor || stored.State != notifier.TopicFanningOut {
		return false, nil
	}
	f.advances++
	stored.Cursor = next
	stored.Recipients, stored.Skipped, stored.Failed = stored.Recipients+add.Recipients, stored.Skipped+add.Skipped, stored.Failed+add.Failed
	if done {
		stored.State, f.owner[ts.ID] = notifier.TopicDone, ""
	}
	return true, nil
}

func (f *fakeTopics) CancelTopicSend(_ context.Context, id uuid.UUID, _ time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ts, ok := f.sends[id]; ok {
		ts.State, f.owner[id] = notifier.TopicCanceled, ""
	}
	return nil
}

// TopicRecipients and CancelNotifications find nothing: the recipients' notifications are the
// harness's, and the cancel of a topic send is tested on the real store.
func (f *fakeTopics) TopicRecipients(context.Context, uuid.UUID, uuid.UUID, int) ([]uuid.UUID, error) {
	return nil, nil
}

func (f *fakeTopics) CancelNotifications(context.Context, []uuid.UUID, time.Time) (int, error) {
	return 0, nil
}

// expire ends every lease, as the passing of time does for a replica that died.
func (f *fakeTopics) expire() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.owner)
}

// once returns a function that answers true the first time it is asked about each key.
func once() func(string) bool {
	var mu sync.Mutex
	seen := map[string]bool{}
	return func(key string) bool {
		mu.Lock()
		defer mu.Unlock()
		first := !seen[key]
		seen[key] = true
		return first
	}
}

// TestTopicFanOut: the fan-out gives every subscriber one notification, counts the ones it
// could not reach, and keeps both exact when pages are sent again: after a commit whose cursor
// never moved (a crash between the two), after a failed subscriber page, and when another
// replica takes an expired lease over.
func TestTopicFanOut(t *testing.T) {
	const subscribers = 2500
	for _, tc := range []struct {
		name string
		// configure sets up the failures; takeover says the first owner dies mid-way.
		configure func(*fakeTopics, *notifiertest.Subscribers)
		takeover  bool
	}{
		{name: "every page once", configure: func(*fakeTopics, *notifiertest.Subscribers) {}},
		{name: "every page committed twice", configure: func(f *fakeTopics, _ *notifiertest.Subscribers) { f.failAdvance = once() }},
		{name: "subscriber pages unavailable once", configure: func(_ *fakeTopics, s *notifiertest.Subscribers) {
			first := once()
			s.Before = func(page string) error {
				if first(page) {
					return errs.E(errs.Unavailable, "contacts service unavailable")
				}
				return nil
			}
		}},
		{name: "a replica takes over", configure: func(*fakeTopics, *notifiertest.Subscribers) {}, takeover: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness()
			h.dir.users = map[string]notifier.User{}
			var ids []string
			for i := range subscribers {
				id := fmt.Sprintf("u%05d", i)
				ids = append(ids, id)
				switch {
				case i%500 == 7: // deleted meanwhile: no such user
				case i%500 == 8: // no address on any channel
					h.dir.users[id] = notifier.User{ID: id}
				default:
					h.dir.users[id] = notifier.User{ID: id, Email: id + "@example.com"}
				}
			}
			store, subs := &fakeTopics{}, &notifiertest.Subscribers{IDs: ids}
			tc.configure(store, subs)
			topics := notifier.NewTopics(notifier.Topics{Sender: h.svc, Store: store, Subscribers: subs, Log: h.svc.Log,
				Owner: "first", Interval: time.Millisecond})
			res, err := topics.SendToTopic(context.Background(), billing, "releases", &notifier.SendRequest{
				IdempotencyKey: "release-2.0", Category: "news", Content: &notifier.Content{Subject: "Hi", Body: "2.0 is out"}})
			if err != nil {
				t.Fatal(err)
			}
			id := res.Notification.ID

			if tc.takeover { // another replica commits a page and its cursor, then a page, and dies
				dead := notifier.NewTopics(notifier.Topics{Sender: h.svc, Store: store, Log: h.svc.Log, Owner: "dead",
					Subscribers: subs, Interval: time.Millisecond})
				ctx, cancel := context.WithCancel(context.Background())
				store.failAdvance = func(cursor string) bool {
					if cursor != "" { // its second page's cursor: the process died before it moved
						cancel()
						return true
					}
					return false
				}
				dead.Run(ctx)
				store.failAdvance = nil
				store.expire()
			}

			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				topics.Run(ctx)
				close(done)
			}()
			deadline := time.Now().Add(time.Minute) // bounds a broken run; not a timing assertion
			for {
				ts, err := store.TopicSend(ctx, id, false)
				if err != nil {
					t.Fatal(err)
				}
				if ts.State == notifier.TopicDone {
					want := notifier.TopicCounts{Recipients: subscribers - 10, Skipped: 10}
					if ts.TopicCounts != want {
						t.Errorf("counts %+v, want %+v", ts.TopicCounts, want)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("not done after a minute: %+v", ts)
				}
				time.Sleep(5 * time.Millisecond)
			}
			cancel()
			<-done

			// One notification for each subscriber who is a user with an address, none twice,
			// each linked to the topic send, with the key derived from it.
			var got []string
			h.store.mu.Lock()
			for _, n := range h.store.notifications {
				if n.ID == id {
					continue
				}
				if n.TopicSendID != id || n.IdempotencyKey != notifier.RecipientKey(id, n.UserID) || len(n.Deliveries) != 1 {
					t.Errorf("recipient notification %+v", n)
				}
				got = append(got, n.UserID)
			}
			h.store.mu.Unlock()
			slices.Sort(got)
			var want []string
			for i, id := range ids {
				if i%500 != 7 && i%500 != 8 {
					want = append(want, id)
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("%d recipient notifications (%d distinct), want %d", len(got), len(slices.Compact(slices.Clone(got))), len(want))
			}
		})
	}
}
