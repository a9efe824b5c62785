package herald

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

// maxMessageSize is the largest request or answer Herald's servers take or send
// (internal/server.MaxMessageSize, which this public package does not import). Holding the
// client to it makes a request over it fail at once with RESOURCE_EXHAUSTED, without a round
// trip; TestMaxMessageSize keeps the two equal.
const maxMessageSize = 4 << 20

// How WaitForNotification polls: soon at first, as most deliveries finish within a second,
// then less often, so that a long wait costs the notifier little.
const (
	pollFirst = 100 * time.Millisecond
	pollMax   = 2 * time.Second
)

// Client calls Herald's notifier, and its contacts service for Contacts. It is safe for
// concurrent use: make one and share it.
type Client struct {
	conn, contactsConn *grpc.ClientConn
	notifications      heraldv1.NotificationServiceClient
	templates          heraldv1.TemplateServiceClient
	contacts           heraldv1.ContactsServiceClient
	sleep              func(context.Context, time.Duration) error
}

// Option configures a Client.
type Option func(*options)

type options struct {
	tls          *tls.Config
	dial         []grpc.DialOption
	contactsAddr string
	retry        retrier
}

// WithTLS connects over TLS with cfg (with a client certificate in cfg for mTLS) instead of
// plaintext.
func WithTLS(cfg *tls.Config) Option { return func(o *options) { o.tls = cfg } }

// WithDialOptions adds gRPC dial options, after the client's own, to both connections.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dial = append(o.dial, opts...) }
}

// WithContactsAddr sets the address of the contacts service, which Contacts calls; by default
// it is the notifier's address, for deployments that route both services behind one.
func WithContactsAddr(addr string) Option { return func(o *options) { o.contactsAddr = addr } }

// WithTimeout sets the deadline, d from the start of a call and covering all of its attempts,
// given to a call whose context has none (default 10 s). Zero or less gives none.
func WithTimeout(d time.Duration) Option { return func(o *options) { o.retry.timeout = d } }

// WithRetries sets how many attempts a call makes at most, the first included (default 5);
// 1 turns retries off.
func WithRetries(maxAttempts int) Option {
	return func(o *options) { o.retry.attempts = max(1, maxAttempts) }
}

// NewClient returns a client of the notifier at addr (host:port) that authenticates with the
// app key. It connects lazily, on the first call, so it fails only on a malformed key or
// address; its errors never hold the key.
func NewClient(addr, key string, opts ...Option) (*Client, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	o := options{retry: retrier{attempts: 5, timeout: 10 * time.Second, sleep: sleep, jitter: jitter}}
	for _, opt := range opts {
		opt(&o)
	}
	transport := insecure.NewCredentials()
	if o.tls != nil {
		transport = credentials.NewTLS(o.tls)
	}
	dial := append([]grpc.DialOption{
		grpc.WithTransportCredentials(transport),
		grpc.WithPerRPCCredentials(bearer(key)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageSize), grpc.MaxCallSendMsgSize(maxMessageSize)),
		// Keys first, so that every attempt carries the same one.
		grpc.WithChainUnaryInterceptor(fillIdempotencyKeys, o.retry.intercept),
	}, o.dial...)
	conn, err := grpc.NewClient(addr, dial...)
	if err != nil {
		return nil, fmt.Errorf("herald: notifier address %q: %w", addr, err)
	}
	c := &Client{conn: conn, contactsConn: conn, sleep: o.retry.sleep}
	if o.contactsAddr != "" && o.contactsAddr != addr {
		if c.contactsConn, err = grpc.NewClient(o.contactsAddr, dial...); err != nil {
			conn.Close()
			return nil, fmt.Errorf("herald: contacts address %q: %w", o.contactsAddr, err)
		}
	}
	c.notifications = heraldv1.NewNotificationServiceClient(c.conn)
	c.templates = heraldv1.NewTemplateServiceClient(c.conn)
	c.contacts = heraldv1.NewContactsServiceClient(c.contactsConn)
	return c, nil
}

// checkKey refuses what cannot be an app key before any call is made, saying what is wrong.
// Its errors never quote the key: it is a secret, and errors end up in logs.
func checkKey(key string) error {
	switch {
	case key == "":
		return errors.New("herald: no app key given")
	case strings.HasPrefix(key, "Bearer "):
		return errors.New(`herald: the app key starts with "Bearer ": pass the key alone, the client adds the header`)
	case !strings.HasPrefix(key, "hk_"):
		return errors.New(`herald: the app key does not start with "hk_": pass the key that heraldctl apps create printed`)
	case strings.ContainsFunc(key, func(r rune) bool { return r <= ' ' || r > '~' }):
		return errors.New("herald: the app key holds a space, a line break or another character no app key has")
	}
	return nil
}

// bearer sends the app key with every call. It does not require transport security because
// Herald takes keys over plaintext too, as the stack of make run serves it.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }

// Close closes the client's connections, failing the calls still in flight.
func (c *Client) Close() error {
	err := c.conn.Close()
	if c.contactsConn != c.conn {
		err = errors.Join(err, c.contactsConn.Close())
	}
	return err
}

// Notifications returns the notifier's NotificationService, with the retries and the
// idempotency keys of the Client's methods.
func (c *Client) Notifications() heraldv1.NotificationServiceClient { return c.notifications }

// Templates returns the notifier's TemplateService, with the Client's retries.
func (c *Client) Templates() heraldv1.TemplateServiceClient { return c.templates }

// Contacts returns the contacts service's ContactsService (see WithContactsAddr), with the
// Client's retries.
func (c *Client) Contacts() heraldv1.ContactsServiceClient { return c.contacts }

// Send sends one notification to one recipient. A request without an idempotency key is sent
// with a random one, so that a retry never sends it twice; the request is not modified. The
// answer's Duplicate is true only when a key the caller gave was seen before.
// Errors: INVALID_ARGUMENT (with a BadRequest detail), ALREADY_EXISTS (the key was used for a
// different request), NOT_FOUND (template or user), PERMISSION_DENIED, UNAUTHENTICATED,
// RESOURCE_EXHAUSTED.
func (c *Client) Send(ctx context.Context, req *heraldv1.SendRequest) (*heraldv1.SendResponse, error) {
	return c.notifications.Send(ctx, req)
}

// SendBatch sends one message to up to 1,000 recipients, each getting an idempotency key as in
// Send when it has none, and answers for each in the request's order. Errors (for the whole
// batch): INVALID_ARGUMENT, PERMISSION_DENIED, UNAUTHENTICATED, RESOURCE_EXHAUSTED.
func (c *Client) SendBatch(ctx context.Context, req *heraldv1.SendBatchRequest) (*heraldv1.SendBatchResponse, error) {
	return c.notifications.SendBatch(ctx, req)
}

// GetNotification returns a notification this app sent, with its deliveries.
// Errors: NOT_FOUND, INVALID_ARGUMENT (malformed id), UNAUTHENTICATED.
func (c *Client) GetNotification(ctx context.Context, id string) (*heraldv1.Notification, error) {
	res, err := c.notifications.GetNotification(ctx, &heraldv1.GetNotificationRequest{NotificationId: id})
	return res.GetNotification(), err
}

// CancelNotification cancels the deliveries of a notification not yet being sent, and returns
// the notification as it is after. Errors: NOT_FOUND, INVALID_ARGUMENT, UNAUTHENTICATED.
func (c *Client) CancelNotification(ctx context.Context, id string) (*heraldv1.Notification, error) {
	res, err := c.notifications.CancelNotification(ctx, &heraldv1.CancelNotificationRequest{NotificationId: id})
	return res.GetNotification(), err
}

// Explain answers what sending req would do, channel by channel, and sends nothing.
// Errors: as Send; PERMISSION_DENIED for a user recipient without contacts access.
func (c *Client) Explain(ctx context.Context, req *heraldv1.SendRequest) (*heraldv1.ExplainResponse, error) {
	return c.notifications.Explain(ctx, &heraldv1.ExplainRequest{Request: req})
}

// TrackEvent records what a recipient did with a delivery (opened, dismissed, clicked).
// Errors: NOT_FOUND (unknown delivery, or another app's), INVALID_ARGUMENT, UNAUTHENTICATED.
func (c *Client) TrackEvent(ctx context.Context, req *heraldv1.TrackEventRequest) (*heraldv1.TrackEventResponse, error) {
	return c.notifications.TrackEvent(ctx, req)
}

// WaitForNotification polls a notification until every delivery is final and returns it. A
// delivery scheduled for later keeps it waiting until then, so give ctx a deadline. When ctx
// ends or a call fails first, it returns the error with the last notification it saw (nil
// if none).
func (c *Client) WaitForNotification(ctx context.Context, id string) (*heraldv1.Notification, error) {
	var last *heraldv1.Notification
	for interval := pollFirst; ; interval = min(2*interval, pollMax) {
		n, err := c.GetNotification(ctx, id)
		if err != nil {
			return last, err
		}
		if settled(n) {
			return n, nil
		}
		last = n
		if c.sleep(ctx, interval) != nil {
			return last, status.FromContextError(ctx.Err()).Err()
		}
	}
}

// settled reports whether every delivery of n is final: none will be sent (again). Its states
// are the server's (internal/delivery State.Terminal): SENT is final though the provider may
// still report it DELIVERED or BOUNCED, and a state newer than this client counts as final.
func settled(n *heraldv1.Notification) bool {
	for _, d := range n.GetDeliveries() {
		switch d.GetState() {
		case heraldv1.DeliveryState_DELIVERY_STATE_SCHEDULED, heraldv1.DeliveryState_DELIVERY_STATE_WAITING,
			heraldv1.DeliveryState_DELIVERY_STATE_QUEUED,
			heraldv1.DeliveryState_DELIVERY_STATE_SENDING, heraldv1.DeliveryState_DELIVERY_STATE_RETRYING:
			return false
		}
	}
	return true
}
