package e2e

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

// topicUser is the id of the i-th subscriber of the topic tests: zero-padded, so that the
// subscribers' order (by id) is the order they were made in.
func topicUser(i int) string { return fmt.Sprintf("sub%06d", i) }

// seedTopic makes n users, each with an email address and a phone number, subscribes them to
// topic, and opts every optOutEvery-th one out of email (0: none), through the API's bulk
// calls (BatchUpsertUsers, Subscribe: 1,000 users a call). It returns the opted-out users.
func seedTopic(t testing.TB, s *stack, topic string, n, optOutEvery int) map[string]bool {
	t.Helper()
	ctx := context.Background()
	start := time.Now()
	var g group
	for from := 0; from < n; from += 1000 {
		g.Go(func() error {
			req := &heraldv1.BatchUpsertUsersRequest{}
			sub := &heraldv1.SubscribeRequest{Topic: topic}
			for i := from; i < min(n, from+1000); i++ {
				id := topicUser(i)
				req.Users = append(req.Users, &heraldv1.User{UserId: id, Email: id + "@example.com",
					Phone: fmt.Sprintf("+1415555%04d", i%10000)})
				sub.UserIds = append(sub.UserIds, id)
			}
			if _, err := s.people.BatchUpsertUsers(ctx, req); err != nil {
				return fmt.Errorf("BatchUpsertUsers: %w", err)
			}
			res, err := s.people.Subscribe(ctx, sub)
			if err != nil {
				return fmt.Errorf("Subscribe: %w", err)
			}
			if int(res.Subscribed) != len(sub.UserIds) || len(res.UnknownUserIds) != 0 {
				return fmt.Errorf("Subscribe = %v, want all %d subscribed", res, len(sub.UserIds))
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	optedOut := map[string]bool{}
	for i := 0; optOutEvery > 0 && i < n; i += optOutEvery {
		id := topicUser(i)
		optedOut[id] = true
		g.Go(func() error {
			_, err := s.people.UpdateSettings(ctx, &heraldv1.UpdateSettingsRequest{UserId: id,
				Settings: &heraldv1.Settings{OptedOutChannels: []heraldv1.Channel{heraldv1.Channel_CHANNEL_EMAIL}}})
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	t.Logf("seeded %d subscribers of %q in %s", n, topic, time.Since(start).Round(time.Millisecond))
	return optedOut
}

// group runs functions four at a time and keeps the first error.
type group struct {
	wg   sync.WaitGroup
	sem  chan struct{}
	once sync.Once
	mu   sync.Mutex
	err  error
}

func (g *group) Go(f func() error) {
	g.once.Do(func() { g.sem = make(chan struct{}, 4) })
	g.sem <- struct{}{}
	g.wg.Go(func() {
		defer func() { <-g.sem }()
		if err := f(); err != nil {
			g.mu.Lock()
			g.err = cmp.Or(g.err, err)
			g.mu.Unlock()
		}
	})
}

func (g *group) Wait() error {
	g.wg.Wait()
	return g.err
}

// topicRequest is a SendToTopic of inline content on the account category.
func topicRequest(topic, key string) *heraldv1.SendToTopicRequest {
	return &heraldv1.SendToTopicRequest{
		Topic: topic, IdempotencyKey: key, Category: "account",
		Message: &heraldv1.SendToTopicRequest_Content{Content: &heraldv1.Content{
			Title: "Release 2.0", Subject: "Release 2.0 is out", Body: "It is faster.", Html: "<p>It is faster.</p>"}},
	}
}

// waitTopicDone waits until the topic send's fan-out is done and returns its notification.
func waitTopicDone(t *testing.T, client heraldv1.NotificationServiceClient, id string, limit time.Duration) *heraldv1.Notification {
	t.Helper()
	var n *heraldv1.Notification
	waitFor(t, "topic send "+id+" to be fanned out", limit, func() (bool, error) {
		res, err := client.GetNotification(context.Background(), &heraldv1.GetNotificationRequest{NotificationId: id})
		if err != nil {
			return false, err
		}
		n = res.Notification
		return n.GetTopic().GetState() == heraldv1.TopicSendState_TOPIC_SEND_STATE_DONE, nil
	})
	return n
}

// topicCounts is what the delivery store holds of a topic send's recipients.
type topicCounts struct {
	notifications, deliveries int
	// repeated counts the (user, channel) pairs with more than one delivery.
	repeated int
	// perChannel counts deliveries per channel; optedOut the skipped ones with reason opted_out
	// per user.
	perChannel map[string]int
	optedOut   map[string]bool
	otherSkips int
}

func countTopic(t testing.TB, s *stack, id string) topicCounts {
	t.Helper()
	ctx := context.Background()
	c := topicCounts{perChannel: map[string]int{}, optedOut: map[string]bool{}}
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM notifier.notifications WHERE topic_send_id = $1 AND id <> $1`,
		id).Scan(&c.notifications); err != nil {
		t.Fatal(err)
	}
	rows, err := s.pool.Query(ctx, `
		SELECT d.user_id, d.channel, count(*), count(*) FILTER (WHERE d.state = 'skipped' AND d.reason = 'opted_out'),
			count(*) FILTER (WHERE d.state = 'skipped' AND d.reason <> 'opted_out')
		FROM notifier.notifications n JOIN delivery.deliveries d ON d.notification_id = n.id
		WHERE n.topic_send_id = $1 AND n.id <> $1 GROUP BY d.user_id, d.channel`, id)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var user, channel string
		var n, optedOut, skipped int
		if err := rows.Scan(&user, &channel, &n, &optedOut, &skipped); err != nil {
			t.Fatal(err)
		}
		c.deliveries += n
		c.perChannel[channel] += n
		if n > 1 {
			c.repeated++
		}
		if optedOut > 0 {
			if channel != "email" {
				t.Errorf("user %s opted out on %s", user, channel)
			}
			c.optedOut[user] = true
		}
		c.otherSkips += skipped
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return c
}

// checkTopicCounts checks that each of n subscribers has exactly one delivery on email and
// one on SMS, and that the opted-out ones' emails, and only those, were skipped opted_out.
func checkTopicCounts(t *testing.T, c topicCounts, n int, optedOut map[string]bool) {
	t.Helper()
	if c.notifications != n {
		t.Errorf("%d recipient notifications, want %d", c.notifications, n)
	}
	if c.repeated != 0 {
		t.Errorf("%d (user, channel) pairs have more than one delivery", c.repeated)
	}
	if c.perChannel["email"] != n || c.perChannel["sms"] != n || c.deliveries != 2*n {
		t.Errorf("deliveries per channel %v (%d in all), want %d each", c.perChannel, c.deliveries, n)
	}
	if len(c.optedOut) != len(optedOut) {
		t.Errorf("%d users' emails skipped opted_out, want %d", len(c.optedOut), len(optedOut))
	}
	for u := range optedOut {
		if !c.optedOut[u] {
			t.Errorf("user %s opted out of email but their email was not skipped", u)
		}
	}
	if c.otherSkips != 0 {
		t.Errorf("%d deliveries skipped for another reason", c.otherSkips)
	}
}

// TestTopicSend subscribes 2,500 users (three pages of subscribers) to a topic, some opted
// out of email, sends to the topic with the workers running, and checks: the answer comes with
// a notification id; the same idempotency key answers the same topic send as a duplicate, and
// with another request is refused; the progress reaches DONE with every subscriber a
// recipient; every subscriber has exactly one delivery on each channel, the opted-out ones'
// emails skipped; every other delivery is sent by the providers; a recipient's notification
// names the topic send.
func TestTopicSend(t *testing.T) {
	const n = 2500
	s := startStack(t, stackOptions{})
	ctx := context.Background()
	optedOut := seedTopic(t, s, "releases", n, 100)
	// A subscriber with no address on any channel gets no notification: skipped.
	if _, err := s.people.UpsertUser(ctx, &heraldv1.UpsertUserRequest{User: &heraldv1.User{UserId: "zz-no-address"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.people.Subscribe(ctx, &heraldv1.SubscribeRequest{Topic: "releases", UserIds: []string{"zz-no-address"}}); err != nil {
		t.Fatal(err)
	}

	res, err := s.notify.SendToTopic(ctx, topicRequest("releases", "release-2.0"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Duplicate || res.NotificationId == "" {
		t.Fatalf("SendToTopic = %v", res)
	}
	again, err := s.notify.SendToTopic(ctx, topicRequest("releases", "release-2.0"))
	if err != nil || !again.Duplicate || again.NotificationId != res.NotificationId {
		t.Fatalf("SendToTopic again = %v, %v; want a duplicate of %s", again, err, res.NotificationId)
	}
	other := topicRequest("releases", "release-2.0")
	other.GetContent().Body = "Something else."
	if _, err := s.notify.SendToTopic(ctx, other); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("the key with another request: %v, want ALREADY_EXISTS", err)
	}

	done := waitTopicDone(t, s.notify, res.NotificationId, 2*time.Minute)
	if tp := done.GetTopic(); tp.Recipients != n || tp.Skipped != 1 || tp.Failed != 0 || tp.Topic != "releases" ||
		tp.TopicSendId != res.NotificationId || tp.DoneTime == nil {
		t.Errorf("progress %v, want %d recipients and 1 skipped", tp, n)
	}
	checkTopicCounts(t, countTopic(t, s, res.NotificationId), n, optedOut)
	metrics := get(t, "http://"+s.notifier.HTTPAddr()+"/metrics")
	for _, want := range []string{`herald_topic_subscribers_total{outcome="recipient"} 2500`, `herald_topic_subscribers_total{outcome="skipped"} 1`} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("the notifier's metrics lack %s", want)
		}
	}

	// Every delivery not skipped reaches the providers.
	waitFor(t, "every delivery to be sent", 2*time.Minute, func() (bool, error) {
		res, err := s.notify.GetNotification(ctx, &heraldv1.GetNotificationRequest{NotificationId: res.NotificationId})
		if err != nil {
			return false, err
		}
		counts := map[heraldv1.DeliveryState]int64{}
		for _, c := range res.Notification.GetTopic().GetDeliveries() {
			counts[c.State] = c.Count
		}
		return counts[heraldv1.DeliveryState_DELIVERY_STATE_SENT] == int64(2*n-len(optedOut)) &&
			counts[heraldv1.DeliveryState_DELIVERY_STATE_SKIPPED] == int64(len(optedOut)), nil
	})

	var recipient string
	if err := s.pool.QueryRow(ctx, `SELECT id FROM notifier.notifications WHERE topic_send_id = $1 AND user_id = $2`,
		res.NotificationId, topicUser(7)).Scan(&recipient); err != nil {
		t.Fatal(err)
	}
	got, err := s.notify.GetNotification(ctx, &heraldv1.GetNotificationRequest{NotificationId: recipient})
	if err != nil {
		t.Fatal(err)
	}
	if tp := got.Notification.GetTopic(); tp.GetTopicSendId() != res.NotificationId || tp.GetTopic() != "releases" ||
		tp.GetState() != heraldv1.TopicSendState_TOPIC_SEND_STATE_UNSPECIFIED || len(got.Notification.Deliveries) != 2 {
		t.Errorf("a recipient's notification: %v", got.Notification)
	}

	// heraldctl: the progress, the subscriptions, and a topic send of its own.
	var all strings.Builder
	for i := range n {
		all.WriteString(topicUser(i) + "\n")
	}
	allSubscribers := all.String() + "zz-no-address\n"
	for _, tc := range []struct {
		args []string
		want *regexp.Regexp
	}{
		{[]string{"status", res.NotificationId}, regexp.MustCompile(`topic releases  done  recipients 2500  skipped 1  failed 0\n(.|\n)*sent +4975\n`)},
		{[]string{"status", recipient}, regexp.MustCompile(`from topic send ` + res.NotificationId + ` \(topic releases\)`)},
		{[]string{"topics", "of", topicUser(7)}, regexp.MustCompile(`^releases\n$`)},
		{[]string{"topics", "subscribers", "releases"}, regexp.MustCompile(`^` + regexp.QuoteMeta(allSubscribers) + `$`)},
		{[]string{"topics", "subscribe", "beta", topicUser(1), topicUser(2), "ghost"},
			regexp.MustCompile(`subscribed 2 users to beta \(0 were already\)\nno such users \(not subscribed\): ghost\n`)},
		{[]string{"topics", "unsubscribe", "beta", topicUser(2)}, regexp.MustCompile(`unsubscribed 1 users from beta`)},
		{[]string{"topics", "send", "beta", "--subject", "Beta", "--body", "You are in the beta.", "--channels", "email", "--wait"},
			regexp.MustCompile(`topic beta  done  recipients 1  skipped 0  failed 0\n`)},
	} {
		out := s.heraldctl(t, tc.args...)
		if !tc.want.MatchString(out) {
			t.Errorf("heraldctl %s:\n%s\nwant it to match %s", strings.Join(tc.args, " "), out, tc.want)
		}
	}

	// A topic send canceled at once stops wherever its fan-out was: once the deliveries the
	// workers held are settled, none of its recipients' deliveries is left to be sent, and
	// none appears later. A second cancel answers the same.
	second, err := s.notify.SendToTopic(ctx, topicRequest("releases", "release-2.1"))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		c, err := s.notify.CancelNotification(ctx, &heraldv1.CancelNotificationRequest{NotificationId: second.NotificationId})
		if err != nil || c.Notification.GetTopic().GetState() != heraldv1.TopicSendState_TOPIC_SEND_STATE_CANCELED {
			t.Fatalf("CancelNotification of the topic send = %v, %v; want it canceled", c, err)
		}
	}
	unsent := func() (held, pending, recipients int) {
		t.Helper()
		if err := s.pool.QueryRow(ctx, `
			SELECT count(*) FILTER (WHERE d.state = 'sending'),
				count(*) FILTER (WHERE d.state IN ('scheduled', 'waiting', 'queued', 'retrying')),
				count(DISTINCT n.id)
			FROM notifier.notifications n JOIN delivery.deliveries d ON d.notification_id = n.id
			WHERE n.topic_send_id = $1 AND n.id <> $1`, second.NotificationId).Scan(&held, &pending, &recipients); err != nil {
			t.Fatal(err)
		}
		return held, pending, recipients
	}
	waitFor(t, "the deliveries the workers held to be sent", time.Minute, func() (bool, error) {
		held, _, _ := unsent()
		return held == 0, nil
	})
	_, pending, recipients := unsent()
	t.Logf("the cancel stopped the fan-out at %d of %d recipients", recipients, n)
	if pending != 0 || recipients > n {
		t.Errorf("after the cancel: %d deliveries left to send, %d recipients; want none left, at most %d", pending, recipients, n)
	}
	out := s.heraldctl(t, "status", second.NotificationId)
	if want := regexp.MustCompile(`topic releases  canceled  recipients \d+`); !want.MatchString(out) {
		t.Errorf("heraldctl status of the canceled topic send:\n%s\nwant it to match %s", out, want)
	}
	// No replica took the fan-out up again meanwhile.
	if _, pending, later := unsent(); pending != 0 || later != recipients {
		t.Errorf("later: %d deliveries left to send, %d recipients; want none, and still %d", pending, later, recipients)
	}
}

// httpTopics exercises the topic routes of TestHTTPAPI, the README's example among them:
// users in bulk, subscribe, the subscribers and a user's topics (through both ports), a send
// with an Idempotency-Key header (twice: the second is a duplicate), its progress, unsubscribe.
func httpTopics(t *testing.T, s *stack, notifier, contacts jsonAPI) {
	type progress struct {
		Notification struct {
			Topic struct {
				State      string `json:"state"`
				Recipients string `json:"recipients"`
			} `json:"topic"`
		} `json:"notification"`
	}
	type subscribers struct {
		UserIDs       []string `json:"userIds"`
		NextPageToken string   `json:"nextPageToken"`
	}
	for i, api := range []jsonAPI{notifier, contacts} {
		a, b := fmt.Sprintf("http-topic-%d-a", i), fmt.Sprintf("http-topic-%d-b", i)
		topic := fmt.Sprintf("http-releases-%d", i)
		up := ok[struct {
			Upserted int `json:"upserted"`
		}](t, api.call(t, "POST", "/v1/users:batchUpsert",
			`{"users": [{"userId": "`+a+`", "email": "`+a+`@example.com"}, {"userId": "`+b+`", "email": "`+b+`@example.com"}]}`))
		if up.Upserted != 2 {
			t.Fatalf("%s: batchUpsert answered %+v", api.name, up)
		}
		sub := ok[struct {
			Subscribed     int      `json:"subscribed"`
			UnknownUserIDs []string `json:"unknownUserIds"`
		}](t, api.call(t, "POST", "/v1/topics/"+topic+":subscribe", `{"userIds": ["`+a+`", "`+b+`", "ghost"]}`))
		if sub.Subscribed != 2 || !slices.Equal(sub.UnknownUserIDs, []string{"ghost"}) {
			t.Fatalf("%s: subscribe answered %+v", api.name, sub)
		}
		page := ok[subscribers](t, api.call(t, "GET", "/v1/topics/"+topic+"/subscribers?pageSize=1", ""))
		if !slices.Equal(page.UserIDs, []string{a}) || page.NextPageToken == "" {
			t.Fatalf("%s: the first page of subscribers: %+v", api.name, page)
		}
		page = ok[subscribers](t, api.call(t, "GET", "/v1/topics/"+topic+"/subscribers?pageSize=1&pageToken="+page.NextPageToken, ""))
		if !slices.Equal(page.UserIDs, []string{b}) || page.NextPageToken != "" {
			t.Fatalf("%s: the last page of subscribers: %+v", api.name, page)
		}
		topics := ok[struct {
			Topics []string `json:"topics"`
		}](t, api.call(t, "GET", "/v1/users/"+a+"/topics", ""))
		if !slices.Equal(topics.Topics, []string{topic}) {
			t.Fatalf("%s: %s's topics: %+v", api.name, a, topics)
		}
		if api.name != "notifier" { // SendToTopic is the notifier's
			continue
		}
		body := `{"category": "account", "content": {"title": "Release 2.0", "subject": "Release 2.0 is out", "body": "It is faster."}}`
		type sent struct {
			NotificationID string `json:"notificationId"`
			Duplicate      bool   `json:"duplicate"`
		}
		first := ok[sent](t, api.call(t, "POST", "/v1/topics/"+topic+":send", body, "Idempotency-Key", topic))
		again := ok[sent](t, api.call(t, "POST", "/v1/topics/"+topic+":send", body, "Idempotency-Key", topic))
		if first.NotificationID == "" || first.Duplicate || again.NotificationID != first.NotificationID || !again.Duplicate {
			t.Fatalf("send: %+v, then %+v", first, again)
		}
		waitFor(t, "the topic send to be done", time.Minute, func() (bool, error) {
			p := ok[progress](t, api.call(t, "GET", "/v1/notifications/"+first.NotificationID, "")).Notification.Topic
			return p.State == "TOPIC_SEND_STATE_DONE" && p.Recipients == "2", nil
		})
		if n := countTopic(t, s, first.NotificationID); n.notifications != 2 || n.perChannel["email"] != 2 {
			t.Errorf("the topic send made %+v, want two emails", n)
		}
		// Its cancel, once done, marks it canceled (twice: the same answer).
		for range 2 {
			p := ok[progress](t, api.call(t, "POST", "/v1/notifications/"+first.NotificationID+":cancel", `{}`)).Notification.Topic
			if p.State != "TOPIC_SEND_STATE_CANCELED" || p.Recipients != "2" {
				t.Errorf("cancel of the done topic send answered %+v", p)
			}
		}
	}
	for _, api := range []jsonAPI{notifier, contacts} {
		un := ok[struct {
			Unsubscribed int `json:"unsubscribed"`
		}](t, api.call(t, "POST", "/v1/topics/http-releases-0:unsubscribe", `{"userIds": ["http-topic-0-a"]}`))
		if want := map[string]int{"notifier": 1, "contacts": 0}[api.name]; un.Unsubscribed != want {
			t.Errorf("%s: unsubscribe answered %+v, want %d", api.name, un, want)
		}
	}
}

// heraldctl runs heraldctl against the stack with its admin key and returns what it printed.
func (s *stack) heraldctl(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := buildHeraldctl()
	if err != nil {
		t.Fatal(err)
	}
	args = append([]string{"--addr", s.notifier.GRPCAddr(), "--contacts-addr", s.contacts.GRPCAddr(), "--key", s.key,
		"--env-file", "/nonexistent"}, args...)
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("heraldctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestTopicSendRefused: what would refuse every recipient alike is refused at once, naming the
// field.
func TestTopicSendRefused(t *testing.T) {
	s := startStack(t, stackOptions{noWorkers: true})
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		edit  func(*heraldv1.SendToTopicRequest)
		code  codes.Code
		field string
	}{
		{"bad topic", func(r *heraldv1.SendToTopicRequest) { r.Topic = "Releases!" }, codes.InvalidArgument, "topic"},
		{"no topic", func(r *heraldv1.SendToTopicRequest) { r.Topic = "" }, codes.InvalidArgument, "topic"},
		{"no message", func(r *heraldv1.SendToTopicRequest) { r.Message = nil }, codes.InvalidArgument, "message"},
		{"bad topic and no message", func(r *heraldv1.SendToTopicRequest) { r.Topic, r.Message = "a b", nil }, codes.InvalidArgument, "topic"},
		{"bad category", func(r *heraldv1.SendToTopicRequest) { r.Category = "Account" }, codes.InvalidArgument, "category"},
		{"unknown category", func(r *heraldv1.SendToTopicRequest) { r.Category = "nope" }, codes.InvalidArgument, "category"},
		{"content with nothing for a requested channel", func(r *heraldv1.SendToTopicRequest) {
			r.Channels = []heraldv1.Channel{heraldv1.Channel_CHANNEL_EMAIL}
			r.Message = &heraldv1.SendToTopicRequest_Content{Content: &heraldv1.Content{Body: "no subject"}}
		}, codes.InvalidArgument, "content"},
		{"unknown template", func(r *heraldv1.SendToTopicRequest) {
			r.Message = &heraldv1.SendToTopicRequest_Template{Template: &heraldv1.TemplateRef{Name: "nope"}}
		}, codes.NotFound, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := topicRequest("releases", "")
			tc.edit(req)
			_, err := s.notify.SendToTopic(ctx, req)
			if tc.field != "" {
				wantField(t, err, tc.code, tc.field)
			} else if status.Code(err) != tc.code {
				t.Fatalf("%v, want %s", err, tc.code)
			}
		})
	}
}

// notifierProcess is the notifier binary running as its own OS process.
type notifierProcess struct {
	cmd    *exec.Cmd
	addr   string
	log    strings.Builder
	mu     sync.Mutex
	exited chan struct{}
}

var buildNotifier = build("github.com/heraldhq/herald/services/notifier/cmd/notifier")

// readyLine finds the gRPC address in the notifier's "notifier ready" log line.
var readyLine = regexp.MustCompile(`"msg":"notifier ready".*"grpc":"([^"]+)"`)

// startNotifierProcess starts the notifier binary on the stack's database, NATS and contacts
// service, with a short topic lease (so a restart takes a killed process's fan-out over soon),
// and waits until it serves.
func (s *stack) startNotifierProcess(t *testing.T, lease time.Duration) *notifierProcess {
	t.Helper()
	bin, err := buildNotifier()
	if err != nil {
		t.Fatal(err)
	}
	p := &notifierProcess{exited: make(chan struct{})}
	p.cmd = exec.Command(bin, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--contacts-addr", s.contacts.GRPCAddr(), "--bootstrap-app", "test", "--topic-lease", lease.String(),
		"--republish-after", "2s", "--reconcile-interval", "200ms")
	p.cmd.Env = append(os.Environ(), "HERALD_DATABASE_URL="+s.dbURL, "HERALD_NATS_URL="+s.natsURL,
		"HERALD_CONTACTS_KEY="+s.contactsKey, "HERALD_BOOTSTRAP_KEY="+s.key)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout = io.Discard
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			p.mu.Unlock()
			if m := readyLine.FindStringSubmatch(line); m != nil {
				ready <- m[1]
			}
		}
		p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			p.mu.Lock()
			t.Logf("notifier process log:\n%s", p.log.String())
			p.mu.Unlock()
		}
	})
	select {
	case p.addr = <-ready:
	case <-p.exited:
		t.Fatal("the notifier process exited before it was ready")
	case <-time.After(time.Minute):
		t.Fatal("the notifier process was not ready within a minute")
	}
	return p
}

func (p *notifierProcess) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// peakRSS reads the process's peak resident set size (VmHWM), in bytes.
func (p *notifierProcess) peakRSS(t *testing.T) int64 {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/<pid>/status")
	return 0
}

// TestTopicFanOut100k is the figure: a topic with 100,000 subscribers (each with an
// email address and a phone number, every 1,000th opted out of email) fans out from a
// notifier running as its own process, which is killed with SIGKILL in the middle of the
// fan-out and started again. Afterwards every subscriber has exactly one delivery on each
// channel, the opted-out ones' emails are skipped, and neither notifier process's peak RSS
// reached 200 MB. The stack's in-process notifier takes no part in fan-outs; no workers run
// (the deliveries are counted in the delivery store: TestTopicSend covers their sending).
func TestTopicFanOut100k(t *testing.T) {
	if testing.Short() {
		t.Skip("100,000 subscribers")
	}
	const (
		n       = 100_000
		maxRSS  = 200 << 20
		killAt  = 20_000 // recipients committed before the kill
		timeout = 5 * time.Minute
	)
	s := startStack(t, stackOptions{noWorkers: true, noTopicFanout: true})
	ctx := context.Background()
	optedOut := seedTopic(t, s, "everyone", n, 1000)

	first := s.startNotifierProcess(t, 2*time.Second)
	client := heraldv1.NewNotificationServiceClient(dial(t, first.addr, s.key))
	start := time.Now()
	res, err := client.SendToTopic(ctx, topicRequest("everyone", "everyone-1"))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the fan-out to pass "+strconv.Itoa(killAt)+" recipients", timeout, func() (bool, error) {
		var recipients int64
		err := s.pool.QueryRow(ctx, `SELECT recipients FROM notifier.topic_sends WHERE id = $1`, res.NotificationId).Scan(&recipients)
		return recipients >= killAt, err
	})
	firstRSS := first.peakRSS(t)
	first.kill()
	var atKill int64
	if err := s.pool.QueryRow(ctx, `SELECT recipients FROM notifier.topic_sends WHERE id = $1`, res.NotificationId).Scan(&atKill); err != nil {
		t.Fatal(err)
	}
	if atKill >= n {
		t.Fatalf("the fan-out was done before the kill (%d recipients): the kill proves nothing", atKill)
	}

	second := s.startNotifierProcess(t, 2*time.Second)
	client = heraldv1.NewNotificationServiceClient(dial(t, second.addr, s.key))
	done := waitTopicDone(t, client, res.NotificationId, timeout)
	elapsed := time.Since(start)
	secondRSS := second.peakRSS(t)
	began := time.Now()
	if _, err := client.GetNotification(ctx, &heraldv1.GetNotificationRequest{NotificationId: res.NotificationId}); err != nil {
		t.Fatal(err)
	}
	t.Logf("GetNotification of the topic send, its %d deliveries counted by state: %s", 2*n, time.Since(began).Round(time.Millisecond))

	if tp := done.GetTopic(); tp.Recipients != n || tp.Skipped != 0 || tp.Failed != 0 {
		t.Errorf("progress %v, want %d recipients", tp, n)
	}
	checkTopicCounts(t, countTopic(t, s, res.NotificationId), n, optedOut)
	t.Logf("fan-out of %d subscribers (%d deliveries) in %s, killed at %d recipients; peak RSS %.0f MB, then %.0f MB",
		n, 2*n, elapsed.Round(time.Millisecond), atKill, float64(firstRSS)/(1<<20), float64(secondRSS)/(1<<20))
	for name, rss := range map[string]int64{"first": firstRSS, "second": secondRSS} {
		if rss >= maxRSS {
			t.Errorf("the %s notifier process peaked at %.0f MB RSS, want under %d MB", name, float64(rss)/(1<<20), maxRSS>>20)
		}
	}
}
