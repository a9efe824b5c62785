package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/heraldhq/herald/examples/inbox/app"
	"github.com/heraldhq/herald/internal/browsertest"
	"github.com/heraldhq/herald/internal/linktoken"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

// inboxRequest is a Send to user's inbox only.
func inboxRequest(user, title string) *heraldv1.SendRequest {
	return &heraldv1.SendRequest{
		Recipient: &heraldv1.Recipient{Kind: &heraldv1.Recipient_UserId{UserId: user}},
		Category:  "account",
		Channels:  []heraldv1.Channel{heraldv1.Channel_CHANNEL_INBOX},
		Message: &heraldv1.SendRequest_Content{Content: &heraldv1.Content{
			Title: title, Body: "Body of " + title,
		}},
		Data: mustStruct(map[string]any{"title": title}),
	}
}

func (s *stack) inbox(t testing.TB) heraldv1.InboxServiceClient {
	return heraldv1.NewInboxServiceClient(dial(t, s.notifier.GRPCAddr(), s.key))
}

func upsertUser(t testing.TB, s *stack, user *heraldv1.User) {
	t.Helper()
	if _, err := s.people.UpsertUser(context.Background(), &heraldv1.UpsertUserRequest{User: user}); err != nil {
		t.Fatal(err)
	}
}

// userToken gets a user token with the stack's app key, as an app's backend does.
func userToken(t testing.TB, s *stack, user string) string {
	t.Helper()
	res, err := s.inbox(t).CreateUserToken(context.Background(), &heraldv1.CreateUserTokenRequest{UserId: user})
	if err != nil {
		t.Fatal(err)
	}
	return res.Token
}

// feedEvent is one Server-Sent Event.
type feedEvent struct {
	id, event, data string
	at              time.Time
}

// feedClient follows the live feed as EventSource does: it remembers the last event id and
// reconnects with it as Last-Event-ID.
type feedClient struct {
	events chan feedEvent
	mu     sync.Mutex
	lastID string
	cancel context.CancelFunc
	done   chan struct{}
}

// followFeed connects to the feed at base (the notifier's HTTP address) with token, resuming after
// lastID when it is set. The stream's first answer must be 200.
func followFeed(t testing.TB, base, token, lastID string) *feedClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+base+"/v1/inbox/feed?token="+url.QueryEscape(token), nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		cancel()
		t.Fatalf("feed answered %s %s: %s", res.Status, res.Header.Get("Content-Type"), b)
	}
	c := &feedClient{events: make(chan feedEvent, 10_000), lastID: lastID, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		defer res.Body.Close()
		sc := bufio.NewScanner(res.Body)
		var ev feedEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.event != "" {
					ev.at = time.Now()
					if ev.id != "" {
						c.mu.Lock()
						c.lastID = ev.id
						c.mu.Unlock()
					}
					c.events <- ev
				}
				ev = feedEvent{}
			case strings.HasPrefix(line, "id: "):
				ev.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				ev.event = line[7:]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[6:]
			}
		}
	}()
	t.Cleanup(c.close)
	return c
}

func (c *feedClient) close() {
	c.cancel()
	<-c.done
}

func (c *feedClient) last() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastID
}

// next returns the next event of kind, skipping others, or fails after limit.
func (c *feedClient) next(t testing.TB, kind string, limit time.Duration) feedEvent {
	t.Helper()
	deadline := time.After(limit)
	for {
		select {
		case ev := <-c.events:
			if ev.event == kind {
				return ev
			}
		case <-c.done:
			t.Fatalf("the feed ended while waiting for a %s event", kind)
		case <-deadline:
			t.Fatalf("no %s event on the feed within %s", kind, limit)
		}
	}
}

func messageTitle(t testing.TB, ev feedEvent) string {
	t.Helper()
	var m struct {
		ID    string `json:"id"`
		Title string `json:"title"`
	}
	if err := json.Unmarshal([]byte(ev.data), &m); err != nil {
		t.Fatalf("message event %q: %v", ev.data, err)
	}
	return m.Title
}

func unreadOf(t testing.TB, ev feedEvent) int64 {
	t.Helper()
	var u struct{ Unread int64 }
	if err := json.Unmarshal([]byte(ev.data), &u); err != nil {
		t.Fatalf("unread event %q: %v", ev.data, err)
	}
	return u.Unread
}

// restartAll stops every service (workers, notifier, contacts) and starts them again, the
// contacts service on its old address (the others are pointed at it).
func (s *stack) restartAll(t *testing.T) {
	t.Helper()
	s.workers.Close()
	s.notifier.Close()
	grpcAddr, httpAddr := s.contacts.GRPCAddr(), s.contacts.HTTPAddr()
	s.contacts.Close()
	s.startContacts(t, grpcAddr, httpAddr)
	s.startWorkers(t)
	s.notifier = s.startNotifier(t)
	s.conn = dial(t, s.notifier.GRPCAddr(), s.key)
	s.notify = heraldv1.NewNotificationServiceClient(s.conn)
}

// TestInboxLiveFeed: a Send to the inbox reaches an open feed within a second (the issue's
// bound, measured from the Send call to the event's arrival), with the unread count; after
// every service restarts, the client reconnects with Last-Event-ID and gets every message it
// missed, once, in order; List has them all.
func TestInboxLiveFeed(t *testing.T) {
	s := startStack(t, stackOptions{})
	ctx := context.Background()
	upsertUser(t, s, &heraldv1.User{UserId: "ada"})
	tok := userToken(t, s, "ada")
	feed := followFeed(t, s.notifier.HTTPAddr(), tok, "")
	if n := unreadOf(t, feed.next(t, "unread", 10*time.Second)); n != 0 {
		t.Fatalf("unread on connect = %d, want 0", n)
	}

	const live = 20
	var took []time.Duration
	for i := range live {
		title := fmt.Sprint("live ", i)
		start := time.Now()
		res, err := s.notify.Send(ctx, inboxRequest("ada", title))
		if err != nil {
			t.Fatal(err)
		}
		if st := res.Deliveries[0].State; st != heraldv1.DeliveryState_DELIVERY_STATE_QUEUED {
			t.Fatalf("inbox delivery %s", st)
		}
		ev := feed.next(t, "message", 10*time.Second)
		took = append(took, ev.at.Sub(start))
		if got := messageTitle(t, ev); got != title {
			t.Fatalf("feed message %q, want %q", got, title)
		}
		if n := unreadOf(t, feed.next(t, "unread", 10*time.Second)); n != int64(i+1) {
			t.Fatalf("unread = %d, want %d", n, i+1)
		}
	}
	slices.Sort(took)
	worst := took[len(took)-1]
	t.Logf("Send to feed event, %d messages: median %s, worst %s", live, took[len(took)/2], worst)
	// The requirement, for every message. Typical is tens of milliseconds here; a
	// second leaves room for a loaded CI machine without hiding a feed that polls instead of
	// listening (the stack's heartbeat, when streams also re-read, is 5 s).
	if worst > time.Second {
		t.Errorf("a message took %s from Send to the feed, over the 1 s bound", worst)
	}

	// Two Sends just before every service goes down: they may reach the first client before
	// the restart, or be stored after it; between the two clients every message must arrive,
	// once.
	for _, title := range []string{"before restart 1", "before restart 2"} {
		if _, err := s.notify.Send(ctx, inboxRequest("ada", title)); err != nil {
			t.Fatal(err)
		}
	}
	s.restartAll(t)
	feed.close()
	var seen []string
	for len(feed.events) > 0 {
		if ev := <-feed.events; ev.event == "message" {
			seen = append(seen, messageTitle(t, ev))
		}
	}
	if _, err := s.notify.Send(ctx, inboxRequest("ada", "after restart")); err != nil {
		t.Fatal(err)
	}
	// Every message is stored before the client comes back: only resuming from its
	// Last-Event-ID can bring it the ones it missed.
	waitFor(t, "every message to be stored", 30*time.Second, func() (bool, error) {
		var n int
		err := s.pool.QueryRow(ctx, `SELECT count(*) FROM inbox.messages WHERE user_id = 'ada'`).Scan(&n)
		return n == live+3, err
	})
	tok = userToken(t, s, "ada")
	again := followFeed(t, s.notifier.HTTPAddr(), tok, feed.last())
	for len(seen) < 3 {
		seen = append(seen, messageTitle(t, again.next(t, "message", 30*time.Second)))
	}
	slices.Sort(seen[:2]) // the two Sends before the restart race each other
	if want := []string{"before restart 1", "before restart 2", "after restart"}; !slices.Equal(seen, want) {
		t.Fatalf("across the restart the feed gave %q, want %q", seen, want)
	}
	select {
	case ev := <-again.events:
		if ev.event == "message" {
			t.Fatalf("a message twice: %s", ev.data)
		}
	case <-time.After(500 * time.Millisecond):
	}

	list, err := s.inbox(t).ListInboxMessages(ctx, &heraldv1.ListInboxMessagesRequest{UserId: "ada", PageSize: 100})
	if err != nil || len(list.Messages) != live+3 {
		t.Fatalf("List = %d messages, %v; want %d", len(list.GetMessages()), err, live+3)
	}
	if got := list.Messages[0].Title; got != "after restart" {
		t.Errorf("newest message %q, want after restart", got)
	}
	all, err := s.inbox(t).MarkAllRead(ctx, &heraldv1.MarkAllReadRequest{UserId: "ada"})
	if err != nil || all.Marked != live+3 || all.Unread != 0 {
		t.Fatalf("MarkAllRead = %v, %v; want %d marked, 0 unread", all, err, live+3)
	}
	if n := unreadOf(t, again.next(t, "unread", 10*time.Second)); n != 0 {
		t.Fatalf("the feed's unread count after MarkAllRead: %d", n)
	}
}

// TestInboxUnreadExact: 50 senders and 50 readers on one user's inbox at once. The unread
// count the API answers and the feed's last unread event both equal what the rows say, every
// read message counts as its delivery's open (DELIVERED), and no message is stored twice.
func TestInboxUnreadExact(t *testing.T) {
	s := startStack(t, stackOptions{})
	ctx := context.Background()
	upsertUser(t, s, &heraldv1.User{UserId: "bo"})
	tok := userToken(t, s, "bo")
	user := heraldv1.NewInboxServiceClient(dial(t, s.notifier.GRPCAddr(), tok))
	feed := followFeed(t, s.notifier.HTTPAddr(), tok, "")

	const senders, each = 50, 4
	var wg sync.WaitGroup
	var failures atomic.Int64
	fail := func(err error) {
		if failures.Add(1) == 1 {
			t.Error(err)
		}
	}
	for i := range senders {
		wg.Go(func() {
			for j := range each {
				if _, err := s.notify.Send(ctx, inboxRequest("bo", fmt.Sprintf("m %d.%d", i, j))); err != nil {
					fail(err)
				}
			}
		})
	}
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
				page, err := user.ListInboxMessages(ctx, &heraldv1.ListInboxMessagesRequest{Read: heraldv1.ReadFilter_READ_FILTER_UNREAD, PageSize: 5})
				if err != nil {
					fail(err)
					return
				}
				if len(page.Messages) > 0 {
					m := page.Messages[rand.IntN(len(page.Messages))]
					if _, err := user.MarkRead(ctx, &heraldv1.MarkReadRequest{Ids: []string{m.Id}}); err != nil {
						fail(err)
						return
					}
				}
				if _, err := user.GetUnreadCount(ctx, &heraldv1.GetUnreadCountRequest{}); err != nil {
					fail(err)
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	waitFor(t, "every inbox message to be stored", 60*time.Second, func() (bool, error) {
		var n int
		err := s.pool.QueryRow(ctx, `SELECT count(*) FROM inbox.messages WHERE user_id = 'bo'`).Scan(&n)
		return n == senders*each, err
	})
	close(stop)
	readers.Wait()

	var unread, read int64
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE read_at IS NULL), count(*) FILTER (WHERE read_at IS NOT NULL)
		FROM inbox.messages WHERE user_id = 'bo'`).Scan(&unread, &read); err != nil {
		t.Fatal(err)
	}
	if read == 0 || unread == 0 {
		t.Fatalf("read %d, unread %d: the test should have both", read, unread)
	}
	t.Logf("%d messages from %d senders; %d read by 50 readers meanwhile, %d unread", senders*each, senders, read, unread)
	got, err := user.GetUnreadCount(ctx, &heraldv1.GetUnreadCountRequest{})
	if err != nil || int64(got.Unread) != unread {
		t.Fatalf("GetUnreadCount = %v, %v; the rows say %d", got, err, unread)
	}
	// The feed settles on the same count (its events come after each change commits).
	var last int64 = -1
	deadline := time.After(30 * time.Second)
	for last != unread {
		select {
		case ev := <-feed.events:
			if ev.event == "unread" {
				last = unreadOf(t, ev)
			}
		case <-deadline:
			t.Fatalf("the feed's unread count stayed at %d; the rows say %d", last, unread)
		}
	}
	var delivered, opens int64
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM delivery.deliveries d JOIN inbox.messages m ON m.id = d.id
		WHERE m.read_at IS NOT NULL AND d.state = 'delivered'`).Scan(&delivered); err != nil {
		t.Fatal(err)
	}
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM notifier.provider_events e JOIN inbox.messages m ON m.id = e.delivery_id
		WHERE e.kind = 'opened'`).Scan(&opens); err != nil {
		t.Fatal(err)
	}
	if delivered != read || opens != read {
		t.Fatalf("%d messages read: %d deliveries delivered, %d opens recorded", read, delivered, opens)
	}
}

// TestInboxTokens: what the inbox refuses. A user token reaches its own user only and cannot
// make tokens; expired, forged and other-purpose tokens are refused; an app key in the feed's
// URL is refused even though it is valid; a user's streams are bounded; CORS lets a page of
// another origin call with a bearer token.
func TestInboxTokens(t *testing.T) {
	s := startStack(t, stackOptions{noWorkers: true})
	ctx := context.Background()
	upsertUser(t, s, &heraldv1.User{UserId: "cy"})
	tok := userToken(t, s, "cy")
	keys, err := linktoken.ParseKeys(s.linkKeys)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := linktoken.New(keys...)
	if err != nil {
		t.Fatal(err)
	}
	expired := signer.Sign(linktoken.Claims{Purpose: linktoken.Inbox, UserID: "cy", Expires: time.Now().Add(-time.Minute).Unix()})
	forever := signer.Sign(linktoken.Claims{Purpose: linktoken.Inbox, UserID: "cy"})
	prefs := signer.Sign(linktoken.Claims{Purpose: linktoken.Preferences, UserID: "cy", Expires: time.Now().Add(time.Hour).Unix()})
	forged := tok[:len(tok)-4] + "AAAA"

	for _, tc := range []struct {
		name  string
		token string
		user  string
		code  codes.Code
	}{
		{"own inbox", tok, "", codes.OK},
		{"own inbox named", tok, "cy", codes.OK},
		{"wrong user", tok, "dee", codes.PermissionDenied},
		{"expired", expired, "", codes.Unauthenticated},
		{"never expires", forever, "", codes.Unauthenticated},
		{"wrong purpose", prefs, "", codes.Unauthenticated},
		{"forged", forged, "", codes.Unauthenticated},
		{"app key without a user", s.key, "", codes.InvalidArgument},
		{"app key", s.key, "cy", codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := heraldv1.NewInboxServiceClient(dial(t, s.notifier.GRPCAddr(), tc.token))
			_, err := c.GetUnreadCount(ctx, &heraldv1.GetUnreadCountRequest{UserId: tc.user})
			if status.Code(err) != tc.code {
				t.Fatalf("GetUnreadCount = %v, want %s", err, tc.code)
			}
		})
	}
	t.Run("a user token cannot make tokens", func(t *testing.T) {
		c := heraldv1.NewInboxServiceClient(dial(t, s.notifier.GRPCAddr(), tok))
		_, err := c.CreateUserToken(ctx, &heraldv1.CreateUserTokenRequest{UserId: "cy"})
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("CreateUserToken with a user token = %v", err)
		}
	})
	t.Run("ttl bounds", func(t *testing.T) {
		_, err := s.inbox(t).CreateUserToken(ctx, &heraldv1.CreateUserTokenRequest{UserId: "cy", Ttl: durationpb.New(48 * time.Hour)})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "ttl") {
			t.Fatalf("CreateUserToken(48h) = %v", err)
		}
	})
	t.Run("the token is refused elsewhere", func(t *testing.T) {
		c := heraldv1.NewNotificationServiceClient(dial(t, s.notifier.GRPCAddr(), tok))
		_, err := c.Send(ctx, inboxRequest("cy", "x"))
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("Send with a user token = %v", err)
		}
	})

	feedURL := "http://" + s.notifier.HTTPAddr() + "/v1/inbox/feed"
	for _, tc := range []struct {
		name, query string
		header      map[string]string
		code        int
	}{
		{"no token", "", nil, http.StatusUnauthorized},
		{"app key in the query", "?token=" + url.QueryEscape(s.key), nil, http.StatusUnauthorized},
		{"app key in the header", "", map[string]string{"Authorization": "Bearer " + s.key}, http.StatusUnauthorized},
		{"expired", "?token=" + url.QueryEscape(expired), nil, http.StatusUnauthorized},
		{"wrong purpose", "?token=" + url.QueryEscape(prefs), nil, http.StatusUnauthorized},
		{"bad Last-Event-ID", "?token=" + url.QueryEscape(tok), map[string]string{"Last-Event-ID": "x"}, http.StatusBadRequest},
	} {
		t.Run("feed: "+tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, feedURL+tc.query, nil)
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != tc.code {
				t.Fatalf("feed answered %s, want %d", res.Status, tc.code)
			}
		})
	}
	t.Run("feed: streams per user are bounded", func(t *testing.T) {
		for range 5 {
			followFeed(t, s.notifier.HTTPAddr(), tok, "").close()
		}
		var open []*feedClient
		for range 5 {
			open = append(open, followFeed(t, s.notifier.HTTPAddr(), tok, ""))
		}
		res, err := http.Get(feedURL + "?token=" + url.QueryEscape(tok))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("a sixth stream: %s, want 429", res.Status)
		}
		for _, c := range open {
			c.close()
		}
	})
	t.Run("no token in the logs", func(t *testing.T) {
		for _, line := range s.logs.lines() {
			for _, secret := range []string{tok, expired, forged, prefs} {
				if strings.Contains(line, secret) {
					t.Fatalf("a log line holds a user token: %s", line)
				}
			}
		}
	})
	t.Run("CORS with a bearer user token", func(t *testing.T) {
		base := "http://" + s.notifier.HTTPAddr()
		pre, _ := http.NewRequest(http.MethodOptions, base+"/v1/inbox/messages:markAllRead", nil)
		pre.Header.Set("Origin", "https://app.example")
		pre.Header.Set("Access-Control-Request-Method", "POST")
		pre.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
		res, err := http.DefaultClient.Do(pre)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNoContent || res.Header.Get("Access-Control-Allow-Origin") != "*" ||
			!strings.Contains(res.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
			t.Fatalf("preflight: %s %v", res.Status, res.Header)
		}
		req, _ := http.NewRequest(http.MethodGet, base+"/v1/inbox/unread-count", nil)
		req.Header.Set("Origin", "https://app.example")
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || res.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Fatalf("GET unread-count: %s %v %s", res.Status, res.Header, body)
		}
	})
}

// TestInboxOptOut: settings apply to the inbox as to every channel: a user who opted out of it
// gets a skipped delivery and nothing in the inbox. A Send that does not name the inbox does not
// reach it, unless its category names the inbox in allowed_channels. A deleted user's inbox is
// erased.
func TestInboxOptOut(t *testing.T) {
	s := startStack(t, stackOptions{})
	ctx := context.Background()
	upsertUser(t, s, &heraldv1.User{UserId: "dee", Email: "dee@example.com"})
	if _, err := s.people.UpdateSettings(ctx, &heraldv1.UpdateSettingsRequest{UserId: "dee", Settings: &heraldv1.Settings{
		OptedOutChannels: []heraldv1.Channel{heraldv1.Channel_CHANNEL_INBOX},
	}}); err != nil {
		t.Fatal(err)
	}
	res, err := s.notify.Send(ctx, inboxRequest("dee", "opted out"))
	if err != nil {
		t.Fatal(err)
	}
	if d := res.Deliveries[0]; d.State != heraldv1.DeliveryState_DELIVERY_STATE_SKIPPED || d.Reason != "opted_out" {
		t.Fatalf("inbox delivery of an opted-out user: %s %q", d.State, d.Reason)
	}

	upsertUser(t, s, &heraldv1.User{UserId: "eli", Email: "eli@example.com"})
	req := inboxRequest("eli", "every channel")
	req.Channels = nil
	res, err = s.notify.Send(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range res.Deliveries {
		if d.Channel == heraldv1.Channel_CHANNEL_INBOX {
			t.Fatalf("a Send naming no channel reached the inbox: %v", res.Deliveries)
		}
	}
	admin := heraldv1.NewAdminServiceClient(s.conn)
	if _, err := admin.PutCategory(ctx, &heraldv1.PutCategoryRequest{Category: &heraldv1.Category{
		Name: "social", DefaultOptIn: true,
		AllowedChannels: []heraldv1.Channel{heraldv1.Channel_CHANNEL_EMAIL, heraldv1.Channel_CHANNEL_INBOX},
	}}); err != nil {
		t.Fatal(err)
	}
	req.Category = "social"
	res, err = s.notify.Send(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	var chans []heraldv1.Channel
	for _, d := range res.Deliveries {
		chans = append(chans, d.Channel)
	}
	if !slices.Equal(chans, []heraldv1.Channel{heraldv1.Channel_CHANNEL_EMAIL, heraldv1.Channel_CHANNEL_INBOX}) {
		t.Fatalf("a category allowing the inbox: channels %v", chans)
	}
	waitFinal(t, s, res.NotificationId)
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM inbox.messages WHERE user_id IN ('dee', 'eli')`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("inbox messages = %d, %v; want 1 (eli's social)", n, err)
	}

	// A deleted user's inbox goes with them.
	if _, err := s.people.DeleteUser(ctx, &heraldv1.DeleteUserRequest{UserId: "eli"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deleted user's inbox to be erased", 30*time.Second, func() (bool, error) {
		err := s.pool.QueryRow(ctx, `SELECT count(*) FROM inbox.messages WHERE user_id = 'eli'`).Scan(&n)
		return n == 0, err
	})
}

func mustStruct(m map[string]any) *structpb.Struct {
	s, err := structpb.NewStruct(m)
	if err != nil {
		panic(err)
	}
	return s
}

// TestInboxExamplePage drives examples/inbox in headless Chromium, its page on another origin
// than Herald (CORS): a Send makes the bell's count go up and the message appear, live; a click
// on the message marks it read and the count goes down.
func TestInboxExamplePage(t *testing.T) {
	s := startStack(t, stackOptions{})
	ctx := context.Background()
	upsertUser(t, s, &heraldv1.User{UserId: "fay"})
	backend := httptest.NewServer(app.New(app.Config{HeraldURL: "http://" + s.notifier.HTTPAddr(), AppKey: s.key, User: "fay"}))
	t.Cleanup(backend.Close)

	page := browsertest.New(t, 0)
	countIs := func(n string) chromedp.Action[chromedp.Void] {
		return chromedp.Poll[chromedp.Void](`document.getElementById("count").textContent === "`+n+`"`,
			chromedp.WithPollingTimeout(30*time.Second))
	}
	if err := chromedp.Do(page,
		chromedp.Navigate(backend.URL),
		chromedp.Poll[chromedp.Void](`document.getElementById("status").textContent === "live"`, chromedp.WithPollingTimeout(30*time.Second)),
		countIs("0"),
	); err != nil {
		t.Fatalf("open the page: %v", err)
	}
	if _, err := s.notify.Send(ctx, inboxRequest("fay", "Your order shipped")); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(page, countIs("1"), chromedp.WaitVisible(chromedp.CSS(`#list li.unread`))); err != nil {
		t.Fatalf("the bell after a Send: %v", err)
	}
	title, err := chromedp.Run(page, chromedp.Text(chromedp.CSS(`#list li.unread span`)))
	if err != nil || title != "Your order shipped" {
		t.Fatalf("the list shows %q, %v", title, err)
	}
	if err := chromedp.Do(page, chromedp.Click(chromedp.CSS(`#list li.unread`)), countIs("0"),
		chromedp.Poll[chromedp.Void](`document.querySelectorAll("#list li.unread").length === 0`, chromedp.WithPollingTimeout(30*time.Second)),
	); err != nil {
		t.Fatalf("the bell after a click: %v", err)
	}
	var readAt *time.Time
	if err := s.pool.QueryRow(ctx, `SELECT read_at FROM inbox.messages WHERE user_id = 'fay'`).Scan(&readAt); err != nil || readAt == nil {
		t.Fatalf("the message's read time: %v, %v", readAt, err)
	}
}

// TestInboxFallback: the inbox in a fallback chain with a step timeout. A message read in the
// inbox in time counts as reaching the user (its open makes the delivery DELIVERED), so the
// email is not needed; one left unread goes out by email when the step timeout runs out.
func TestInboxFallback(t *testing.T) {
	s := startStack(t, stackOptions{})
	ctx := context.Background()
	upsertUser(t, s, &heraldv1.User{UserId: "gus", Email: "gus@example.com"})
	chain := func(title string) *heraldv1.SendRequest {
		req := inboxRequest("gus", title)
		req.Channels = nil
		req.Message = &heraldv1.SendRequest_Content{Content: &heraldv1.Content{Title: title, Subject: title, Body: "b"}}
		req.Fallback = &heraldv1.Fallback{Channels: []heraldv1.Channel{heraldv1.Channel_CHANNEL_INBOX, heraldv1.Channel_CHANNEL_EMAIL},
			StepTimeout: durationpb.New(3 * time.Second)}
		return req
	}
	user := heraldv1.NewInboxServiceClient(dial(t, s.notifier.GRPCAddr(), userToken(t, s, "gus")))

	read, err := s.notify.Send(ctx, chain("read in time"))
	if err != nil {
		t.Fatal(err)
	}
	unread, err := s.notify.Send(ctx, chain("left unread"))
	if err != nil {
		t.Fatal(err)
	}
	inboxID := read.Deliveries[0].DeliveryId
	waitFor(t, "the first message in the inbox", 30*time.Second, func() (bool, error) {
		res, err := user.MarkRead(ctx, &heraldv1.MarkReadRequest{Ids: []string{inboxID}})
		return err == nil && res.Marked == 1, err
	})
	for _, tc := range []struct {
		id   string
		want []string
	}{
		{read.NotificationId, []string{"1 INBOX DELIVERED ", "2 EMAIL SKIPPED fallback_not_needed"}},
		{unread.NotificationId, []string{"1 INBOX SENT step_timeout", "2 EMAIL SENT "}},
	} {
		n := waitFinal(t, s, tc.id)
		if got := steps(n); !slices.Equal(got, tc.want) {
			t.Errorf("steps %q, want %q", got, tc.want)
		}
	}
}
