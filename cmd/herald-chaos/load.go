package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/heraldhq/herald/cmd/internal/loopstack"
	"github.com/heraldhq/herald/internal/appkey"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

// history is what the callers saw: every Send and its outcome. An acknowledged send's
// deliveries are tracked (tracker.Accept) and their ids kept, so that the check can ask the
// database about the ones the fakes never received.
type history struct {
	t *loopstack.Tracker

	acked    atomic.Int64 // sends answered OK
	unknown  atomic.Int64 // Unavailable or DeadlineExceeded: accepted or not, nobody knows
	failed   atomic.Int64 // any other error: refused, never accepted
	notQueue atomic.Int64 // deliveries of acknowledged sends answered other than QUEUED (or WAITING, a later step)

	mu     sync.Mutex
	ids    map[loopstack.Key]string // delivery key -> delivery id, for acknowledged sends
	errors map[string]int64         // code -> count, for unknown and failed sends
	chains []string                 // notification ids of acknowledged fallback chains
	inbox  map[string]string        // delivery id -> user id, of acknowledged inbox sends
	// digestItems are the delivery ids of acknowledged sends into a digest (SCHEDULED, reason
	// digest): the fakes never receive them, their digest's delivery instead.
	digestItems []string
	topicSends  []string // ids of the acknowledged topic sends
}

func newHistory(t *loopstack.Tracker) *history {
	return &history{t: t, ids: map[loopstack.Key]string{}, errors: map[string]int64{}, inbox: map[string]string{}}
}

// load sends notifications at a steady rate from several callers until stop is closed; send i
// goes to an address of its own on channel i%4.
type load struct {
	h       *history
	clients []heraldv1.NotificationServiceClient
	conns   []*grpc.ClientConn
	offset  int64 // keeps one phase's addresses apart from another's
	next    atomic.Int64
	// refuse, when set, makes the email provider refuse an address for good: half the fallback
	// chains start with one, so that their SMS step goes.
	refuse func(email string)
	// features is set once the users that the inbox and digest sends go to exist (prepare):
	// until then those sends are ordinary ones.
	features bool
}

func newLoad(addr, key string, h *history, offset int64) (*load, error) {
	l := &load{h: h, offset: offset}
	for range 4 {
		c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), appkey.Credentials(key))
		if err != nil {
			l.close()
			return nil, err
		}
		l.conns = append(l.conns, c)
		l.clients = append(l.clients, heraldv1.NewNotificationServiceClient(c))
	}
	return l, nil
}

func (l *load) close() {
	for _, c := range l.conns {
		c.Close()
	}
}

// request returns send i and, for SMS, its number (the Twilio fake tells deliveries apart by
// number).
func request(i int64) (*heraldv1.SendRequest, heraldv1.Channel, string) {
	a := &heraldv1.Address{}
	var number string
	ch := []heraldv1.Channel{heraldv1.Channel_CHANNEL_EMAIL, heraldv1.Channel_CHANNEL_SMS,
		heraldv1.Channel_CHANNEL_IOS, heraldv1.Channel_CHANNEL_ANDROID}[i%4]
	switch ch {
	case heraldv1.Channel_CHANNEL_EMAIL:
		a.Email = fmt.Sprintf("chaos%d@example.com", i)
	case heraldv1.Channel_CHANNEL_SMS:
		number = smsNumber(i)
		a.Phone = number
	case heraldv1.Channel_CHANNEL_IOS:
		sum := sha256.Sum256(fmt.Appendf(nil, "chaos-%d", i))
		a.IosTokens = []string{hex.EncodeToString(sum[:])}
	case heraldv1.Channel_CHANNEL_ANDROID:
		a.AndroidTokens = []string{fmt.Sprintf("chaos-fcm:%030d_APA91b", i)}
	}
	return &heraldv1.SendRequest{
		Recipient: &heraldv1.Recipient{Kind: &heraldv1.Recipient_Address{Address: a}},
		Category:  "account",
		Channels:  []heraldv1.Channel{ch},
		Message: &heraldv1.SendRequest_Content{Content: &heraldv1.Content{
			Title: fmt.Sprintf("Order %d", i), Body: fmt.Sprintf("Your order %d has shipped.", i),
			Subject: fmt.Sprintf("Order %d", i), Html: fmt.Sprintf("<p>Your order <b>%d</b> has shipped.</p>", i),
		}},
	}, ch, number
}

// smsNumber is send i's number: of its own, for any i.
func smsNumber(i int64) string {
	return fmt.Sprintf("+1%s%03d%04d", []string{"212", "213", "310", "312", "415", "646", "718"}[(i/8_000_000)%7],
		200+(i/10_000)%800, i%10_000)
}

// Every chainEvery-th single Send (one with i%4 == 3, an Android send's index, whose email
// address and number no other send uses) is a fallback chain, email then SMS; every other
// chain's email address is refused for good by the provider, so that its SMS step goes.
const chainEvery = 20

// chainRequest returns send i as a fallback chain, and its number.
func (l *load) chainRequest(i int64) (*heraldv1.SendRequest, string) {
	req, _, _ := request(i)
	number := smsNumber(i)
	addr := &heraldv1.Address{Email: fmt.Sprintf("chaos%d@example.com", i), Phone: number}
	if (i/chainEvery)%2 == 1 && l.refuse != nil {
		addr.Email = fmt.Sprintf("chaos-refused%d@example.com", i)
		l.refuse(addr.Email)
	}
	req.Recipient = &heraldv1.Recipient{Kind: &heraldv1.Recipient_Address{Address: addr}}
	req.Channels = nil
	req.Fallback = &heraldv1.Fallback{Channels: []heraldv1.Channel{heraldv1.Channel_CHANNEL_EMAIL, heraldv1.Channel_CHANNEL_SMS}}
	return req, number
}

// callTimeout bounds one Send; past it the send's fate is unknown.
const callTimeout = 10 * time.Second

// run sends rate notifications a second, from callers goroutines, until ctx ends or stop is
// closed.
func (l *load) run(ctx context.Context, stop <-chan struct{}, rate float64, callers int) {
	tokens := make(chan struct{}, callers)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(tokens)
		tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-stop:
				return
			case <-tick.C:
				select {
				case tokens <- struct{}{}:
				default: // the callers are behind (a fault holds them): do not pile up
				}
			}
		}
	})
	for g := range callers {
		wg.Go(func() {
			client := l.clients[g%len(l.clients)]
			n := 0
			for range tokens {
				if n++; n%batchEvery == 0 {
					l.sendBatch(ctx, client)
				} else {
					l.send(ctx, client)
				}
			}
		})
	}
	wg.Wait()
}

// Every batchEvery-th call of a caller is a SendBatch of batchSize recipients, so that messages
// carrying many deliveries are in the queues, and in the workers' hands, at every fault.
const (
	batchEvery = 10
	batchSize  = 10
)

func (l *load) send(ctx context.Context, client heraldv1.NotificationServiceClient) {
	i := l.offset + l.next.Add(1) - 1
	req, _, number := request(i)
	accept := func(res *heraldv1.SendResponse, at time.Time) { l.accept(res, number, at) }
	switch {
	case i%chainEvery == chainEvery-1:
		req, number = l.chainRequest(i)
	case l.features && i%chainEvery == inboxAt:
		user := inboxUser(i)
		req = inboxRequest(i, user)
		accept = func(res *heraldv1.SendResponse, _ time.Time) { l.acceptInbox(res, user) }
	case l.features && i%chainEvery == digestAt:
		req = digestRequest(i)
		accept = func(res *heraldv1.SendResponse, _ time.Time) { l.acceptDigest(res) }
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	res, err := client.Send(cctx, req)
	at := time.Now()
	cancel()
	if err != nil {
		l.callFailed(ctx, err, 1)
		return
	}
	l.h.acked.Add(1)
	accept(res, at)
}

// sendBatch sends batchSize notifications in one SendBatch; each recipient's answer counts as a
// Send's would.
func (l *load) sendBatch(ctx context.Context, client heraldv1.NotificationServiceClient) {
	first := l.offset + l.next.Add(batchSize) - batchSize
	req := &heraldv1.SendBatchRequest{Category: "account"}
	numbers := make([]string, batchSize)
	for j := range int64(batchSize) {
		one, _, number := request(first + j)
		numbers[j] = number
		// Each recipient names its one channel by its address; the batch's content is every
		// channel's.
		req.Recipients = append(req.Recipients, &heraldv1.BatchRecipient{Recipient: one.Recipient})
		if j == 0 {
			req.Message = &heraldv1.SendBatchRequest_Content{Content: one.GetContent()}
		}
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	res, err := client.SendBatch(cctx, req)
	at := time.Now()
	cancel()
	if err != nil {
		l.callFailed(ctx, err, batchSize)
		return
	}
	for j, r := range res.GetResults() {
		if e := r.GetError(); e != nil {
			// A recipient's error is the code name a Send would have answered.
			code := codes.Unknown
			if err := code.UnmarshalJSON([]byte(`"` + e.GetCode() + `"`)); err != nil {
				code = codes.Unknown
			}
			l.count(code, 1)
			continue
		}
		l.h.acked.Add(1)
		l.accept(r.GetResponse(), numbers[j], at)
	}
}

// callFailed counts a call of n notifications that was not answered OK.
func (l *load) callFailed(ctx context.Context, err error, n int64) {
	h := l.h
	if ctx.Err() != nil {
		// The run is ending: the call's fate is unknown.
		h.unknown.Add(n)
		return
	}
	if l.count(status.Code(err), n) {
		// A service that is down answers at once: do not spin.
		time.Sleep(100 * time.Millisecond)
	}
}

// count counts n notifications answered with code, and reports whether their fate is unknown
// (Unavailable, DeadlineExceeded: accepted or not, nobody knows).
func (l *load) count(code codes.Code, n int64) bool {
	h := l.h
	h.mu.Lock()
	h.errors[code.String()] += n
	h.mu.Unlock()
	if code == codes.Unavailable || code == codes.DeadlineExceeded {
		h.unknown.Add(n)
		return true
	}
	h.failed.Add(n)
	return false
}

// accept tracks the deliveries of an acknowledged notification.
func (l *load) accept(res *heraldv1.SendResponse, number string, at time.Time) {
	h := l.h
	for _, d := range res.GetDeliveries() {
		// A later step of a chain waits; it is tracked as any delivery: either a provider
		// receives it, or it ends skipped (fallback_not_needed), which the check accepts.
		if st := d.GetState(); st != heraldv1.DeliveryState_DELIVERY_STATE_QUEUED &&
			(st != heraldv1.DeliveryState_DELIVERY_STATE_WAITING || d.GetStep() < 2) {
			h.notQueue.Add(1)
			continue
		}
		var k loopstack.Key
		var ok bool
		if d.GetChannel() == heraldv1.Channel_CHANNEL_SMS {
			k, ok = loopstack.PhoneKey(number)
		} else {
			k, ok = loopstack.IDKey(d.GetDeliveryId())
		}
		if !ok {
			h.notQueue.Add(1)
			continue
		}
		h.mu.Lock()
		h.ids[k] = d.GetDeliveryId()
		h.mu.Unlock()
		h.t.Accept(k, at)
	}
	if ds := res.GetDeliveries(); len(ds) > 0 && ds[0].GetStep() > 0 {
		h.mu.Lock()
		h.chains = append(h.chains, res.GetNotificationId())
		h.mu.Unlock()
	}
}

// The inbox and digest sends: single Send i with i%chainEvery == inboxAt goes to the inbox of
// one of inboxUsers users, with i%chainEvery == digestAt into the email digest of one of
// digestUsers users. Both indexes are SMS sends' (i%4 == 1), whose numbers no other send uses.
const (
	inboxAt     = 9
	digestAt    = 13
	inboxUsers  = 50
	digestUsers = 4
	// digestWindow is short, so that the notifier's reconciler closes a digest every few
	// seconds per user, at every fault.
	digestWindow   = 3 * time.Second
	digestTemplate = "chaos-digest"
)

func inboxUser(i int64) string { return fmt.Sprintf("chaos-inbox-%d", (i/chainEvery)%inboxUsers) }

func digestUser(k int64) string { return fmt.Sprintf("chaos-digest-%d", k) }

// inboxRequest returns send i to user's inbox.
func inboxRequest(i int64, user string) *heraldv1.SendRequest {
	req, _, _ := request(i)
	req.Recipient = &heraldv1.Recipient{Kind: &heraldv1.Recipient_UserId{UserId: user}}
	req.Channels = []heraldv1.Channel{heraldv1.Channel_CHANNEL_INBOX}
	return req
}

// digestRequest returns send i into its user's email digest.
func digestRequest(i int64) *heraldv1.SendRequest {
	req, _, _ := request(i)
	req.Recipient = &heraldv1.Recipient{Kind: &heraldv1.Recipient_UserId{UserId: digestUser((i / chainEvery) % digestUsers)}}
	req.Channels = []heraldv1.Channel{heraldv1.Channel_CHANNEL_EMAIL}
	req.Digest = &heraldv1.Digest{Close: &heraldv1.Digest_Window{Window: durationpb.New(digestWindow)}, Template: digestTemplate}
	return req
}

// prepare creates the users the inbox and digest sends go to, the topic's subscribers, and the
// digest template, then turns the inbox and digest sends on.
func (l *load) prepare(ctx context.Context, contactsAddr, key string) error {
	conn, err := grpc.NewClient(contactsAddr, grpc.WithTransportCredentials(insecure.NewCredentials()), appkey.Credentials(key))
	if err != nil {
		return err
	}
	defer conn.Close()
	var users []*heraldv1.User
	for k := range int64(inboxUsers) {
		users = append(users, &heraldv1.User{UserId: inboxUser(k * chainEvery)})
	}
	for k := range int64(digestUsers) {
		users = append(users, &heraldv1.User{UserId: digestUser(k), Email: digestUser(k) + "@example.com"})
	}
	contacts := heraldv1.NewContactsServiceClient(conn)
	if _, err := contacts.BatchUpsertUsers(ctx, &heraldv1.BatchUpsertUsersRequest{Users: users}); err != nil {
		return fmt.Errorf("create the inbox and digest users: %w", err)
	}
	if err := prepareTopic(ctx, contacts); err != nil {
		return err
	}
	_, err = heraldv1.NewTemplateServiceClient(l.conns[0]).CreateTemplate(ctx, &heraldv1.CreateTemplateRequest{Template: &heraldv1.Template{
		Name: digestTemplate, Parts: &heraldv1.TemplateParts{
			EmailSubject: "{{.count}} orders shipped",
			EmailText:    "{{range .items}}- {{.subject}} ({{.time}})\n{{end}}",
		},
	}})
	if err != nil {
		return fmt.Errorf("create the digest template: %w", err)
	}
	l.features = true
	return nil
}

// acceptInbox records the inbox delivery of an acknowledged send. The fakes never receive it:
// the check finds it in the inbox.
func (l *load) acceptInbox(res *heraldv1.SendResponse, user string) {
	h := l.h
	for _, d := range res.GetDeliveries() {
		if d.GetState() != heraldv1.DeliveryState_DELIVERY_STATE_QUEUED || d.GetChannel() != heraldv1.Channel_CHANNEL_INBOX {
			h.notQueue.Add(1)
			continue
		}
		h.mu.Lock()
		h.inbox[d.GetDeliveryId()] = user
		h.mu.Unlock()
	}
}

// acceptDigest records the digest item of an acknowledged send.
func (l *load) acceptDigest(res *heraldv1.SendResponse) {
	h := l.h
	for _, d := range res.GetDeliveries() {
		if d.GetState() != heraldv1.DeliveryState_DELIVERY_STATE_SCHEDULED || d.GetReason() != "digest" || d.GetDigestNotificationId() == "" {
			h.notQueue.Add(1)
			continue
		}
		h.mu.Lock()
		h.digestItems = append(h.digestItems, d.GetDeliveryId())
		h.mu.Unlock()
	}
}

// The topic: topicSubscribers users with an email address are subscribed to it before the
// load, and one SendToTopic (email and inbox) goes to them while the faults run.
const (
	topicName        = "chaos-news"
	topicSubscribers = 300
)

func topicUser(k int) string { return fmt.Sprintf("chaos-topic-%d", k) }

// prepareTopic creates the topic's subscribers and subscribes them.
func prepareTopic(ctx context.Context, contacts heraldv1.ContactsServiceClient) error {
	var users []*heraldv1.User
	var ids []string
	for k := range topicSubscribers {
		users = append(users, &heraldv1.User{UserId: topicUser(k), Email: topicUser(k) + "@example.com"})
		ids = append(ids, topicUser(k))
	}
	if _, err := contacts.BatchUpsertUsers(ctx, &heraldv1.BatchUpsertUsersRequest{Users: users}); err != nil {
		return fmt.Errorf("create the topic's subscribers: %w", err)
	}
	res, err := contacts.Subscribe(ctx, &heraldv1.SubscribeRequest{Topic: topicName, UserIds: ids})
	if err != nil {
		return fmt.Errorf("subscribe to the topic: %w", err)
	}
	if n := len(res.GetUnknownUserIds()); n > 0 {
		return fmt.Errorf("subscribe to the topic: %d users unknown", n)
	}
	return nil
}

// sendToTopic sends once to the topic, asking again with the same idempotency key until it is
// answered: a repeat answers the first topic send. It returns the topic send's id.
func (l *load) sendToTopic(ctx context.Context) (string, error) {
	req := &heraldv1.SendToTopicRequest{
		Topic: topicName, IdempotencyKey: "chaos-topic-" + uuid.NewString(), Category: "account",
		Channels: []heraldv1.Channel{heraldv1.Channel_CHANNEL_EMAIL, heraldv1.Channel_CHANNEL_INBOX},
		Message: &heraldv1.SendToTopicRequest_Content{Content: &heraldv1.Content{
			Title: "Release 2.0", Body: "It is faster.", Subject: "Release 2.0 is out", Html: "<p>It is faster.</p>",
		}},
	}
	var res *heraldv1.SendToTopicResponse
	err := retry(ctx, func(ctx context.Context) (err error) {
		res, err = l.clients[0].SendToTopic(ctx, req)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("send to the topic: %w", err)
	}
	l.h.mu.Lock()
	l.h.topicSends = append(l.h.topicSends, res.GetNotificationId())
	l.h.mu.Unlock()
	return res.GetNotificationId(), nil
}
