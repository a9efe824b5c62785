package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults for the fields of Config left zero.
const (
	DefaultBucket    = "HERALD_LIMITS"
	DefaultMaxWindow = 31 * 24 * time.Hour
	DefaultTimeout   = 250 * time.Millisecond
)

// ttlSlack is added to every key's TTL (and to the bucket's MaxAge) so that small clock
// differences between replicas and the server never expire a key that still matters.
const ttlSlack = time.Minute

// ErrUnavailable is wrapped by every error that comes from the limit store being unreachable,
// slow or failing. Callers fail open on it and count it.
var ErrUnavailable = errors.New("rate limit store unavailable")

// ErrInvalid is wrapped by the errors for arguments that can never be answered (a window longer
// than Config.MaxWindow, a key not built by CapKey, a non-positive rate): a bug or a bad
// configuration.
var ErrInvalid = errors.New("invalid rate limit")

// Config says where the limits live and how long a call may wait for them.
type Config struct {
	// Bucket is the key-value bucket's name; DefaultBucket if empty.
	Bucket string
	// Replicas is the bucket's replication factor (3 on a production cluster); 1 if zero.
	Replicas int
	// MaxWindow is the longest cap window Take accepts, and bounds how long keys are kept;
	// DefaultMaxWindow if zero.
	MaxWindow time.Duration
	// Timeout bounds each call's wait for the store, so that a dead store never stalls a send;
	// DefaultTimeout if zero, no bound but the caller's context if negative.
	Timeout time.Duration
}

// Limiter answers frequency caps and request rates from the shared bucket. It is safe for
// concurrent use; each replica holds one.
type Limiter struct {
	js      jetstream.JetStream
	kv      jetstream.KeyValue
	subject string // the bucket's subject prefix, "$KV.<bucket>."
	cfg     Config

	mu   sync.Mutex
	apps map[string]*appState // per app: this replica's lease
}

// New returns a Limiter on the bucket cfg names, creating the bucket or bringing its
// configuration up to date (so every replica may call it at start-up). It fails if JetStream is
// unreachable, or older than nats-server 2.11 (no per-key TTLs).
func New(ctx context.Context, js jetstream.JetStream, cfg Config) (*Limiter, error) {
	if cfg.Bucket == "" {
		cfg.Bucket = DefaultBucket
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.MaxWindow == 0 {
		cfg.MaxWindow = DefaultMaxWindow
	}
	if cfg.MaxWindow < time.Second {
		return nil, fmt.Errorf("%w: max window %v is under a second", ErrInvalid, cfg.MaxWindow)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	// Updates are published to the key's subject directly (see put), which assumes the default
	// JetStream API: a domain or API prefix would move that subject.
	if o := js.Options(); o.Domain != "" || (o.APIPrefix != "" && o.APIPrefix != jetstream.DefaultAPIPrefix) {
		return nil, fmt.Errorf("%w: a JetStream domain or API prefix is not supported", ErrInvalid)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket,
		Description: "Herald frequency caps and app request rates",
		History:     1,
		TTL:         cfg.MaxWindow + ttlSlack,
		Replicas:    cfg.Replicas,
		Storage:     jetstream.FileStorage,
		// Enables per-key TTLs. The markers it leaves when a key expires are of no use here,
		// so they last the shortest time allowed.
		LimitMarkerTTL: time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("ratelimit: create bucket %s: %w", cfg.Bucket, err)
	}
	return &Limiter{
		js:      js,
		kv:      kv,
		subject: "$KV." + cfg.Bucket + ".",
		cfg:     cfg,
		apps:    make(map[string]*appState),
	}, nil
}

// bound applies the default timeout to ctx.
func (l *Limiter) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if l.cfg.Timeout < 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, l.cfg.Timeout)
}

// get returns key's value and revision; a missing (or expired) key has revision 0.
func (l *Limiter) get(ctx context.Context, key string) ([]byte, uint64, error) {
	e, err := l.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if errors.Is(err, jetstream.ErrInvalidKey) {
		return nil, 0, fmt.Errorf("%w: key %q", ErrInvalid, key)
	}
	if err != nil {
		return nil, 0, unavailable("read "+key, err)
	}
	return e.Value(), e.Revision(), nil
}

// errConflict means key changed since it was read: read it again.
var errConflict = errors.New("revision conflict")

// put writes value to key if key is still at revision rev (0: absent), and makes the key expire
// ttl later. It returns errConflict if another writer got there first.
func (l *Limiter) put(ctx context.Context, key string, value []byte, rev uint64, ttl time.Duration) error {
	// TTLs are whole seconds, at least one: round up.
	if r := ttl % time.Second; r != 0 {
		ttl += time.Second - r
	}
	ttl = max(ttl, time.Second)
	var err error
	if rev == 0 {
		// Create also handles a key whose latest entry is a delete marker (an expired key).
		_, err = l.kv.Create(ctx, key, value, jetstream.KeyTTL(ttl))
	} else {
		// kv.Update would drop the TTL; this is the same write with the TTL kept.
		msg := &nats.Msg{Subject: l.subject + key, Header: nats.Header{}, Data: value}
		_, err = l.js.PublishMsg(ctx, msg,
			jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(ttl))
	}
	switch {
	case err == nil:
		return nil
	case isConflict(err):
		return errConflict
	default:
		return unavailable("write "+key, err)
	}
}

func isConflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// backoff waits a little before the attempt-th retry after a conflict (none before the first),
// with jitter so that writers racing on one key spread out.
func backoff(ctx context.Context, attempt int) error {
	if attempt == 0 {
		return nil
	}
	d := rand.N(time.Duration(min(attempt, 10)) * time.Millisecond)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return unavailable("retry after conflict", ctx.Err())
	}
}

func unavailable(op string, err error) error {
	return fmt.Errorf("ratelimit: %s: %w: %w", op, ErrUnavailable, err)
}
