// Package contactscache keeps, in the notifier and the workers, what the contacts service
// resolves, so that the common lookup makes no call to it: users by id (contact data, locale,
// timezone, active device tokens and settings, or that there is no such user), suppressions by
// address, and the complete set of addresses that have any suppression - an address outside
// the set has none, so a Send to an address never suppressed needs no lookup at all.
//
// Everything is kept exact by the contacts service's change feed (ListChanges) with
// internal/coherent: a lookup first waits for a poll of the feed that started after the lookup
// began, one poll serving every lookup waiting at the time. So a lookup that begins after the
// contacts service acknowledged a change (an opt-out, a suppression, a device, a deletion) sees
// it, on every replica. What the caches cannot answer, the lookups waiting at the same time ask
// for in shared ResolveRecipients calls.
package contactscache

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/heraldhq/herald/internal/batch"
	"github.com/heraldhq/herald/internal/coherent"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/preference"
	"github.com/heraldhq/herald/internal/protoconv"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

// User is a user as the contacts service resolves them. Users are shared by every lookup that
// finds them: never change one.
type User struct {
	ID            string
	Email         string
	Phone         string
	Locale        string
	Timezone      string
	IOSTokens     []string // active devices only
	AndroidTokens []string
	// DeviceApps holds, per token, the app its device registered for (an iOS bundle id, an
	// Android package), when it gave one: the workers pick a credential by it. Nil when none did.
	DeviceApps map[string]string
	// Settings are nil when the user never chose any: category defaults apply.
	Settings *preference.Settings
}

// Target is one address on one channel.
type Target struct {
	Channel delivery.Channel
	Address string
}

// Options bound what a Cache holds. Zero fields take the defaults.
type Options struct {
	// MaxUsers and MaxAddresses bound the exact caches, in entries: a user with a device takes
	// about 350 bytes, an address's suppressions about 200. A full cache starts over.
	MaxUsers, MaxAddresses int
	// MaxSuppressed bounds the set of suppressed addresses: 8 bytes each once loaded, up to
	// three times that for a moment while it loads. Past it, the set is dropped and every
	// address is looked up (cached or called).
	MaxSuppressed int
	// Stale is how long the feed may go unread before everything held is forgotten; it must
	// stay below how long the contacts service keeps the feed (an hour). The cache reads the
	// feed at least every quarter of it, so an idle process keeps what it holds.
	Stale time.Duration
	// Metrics registers the cache's metrics (nil: none).
	Metrics prometheus.Registerer
	Log     *slog.Logger
}

// The defaults: at most about 35 MB of users and 4 MB of addresses' suppressions, and a set of
// up to 10 million suppressed addresses (80 MB; 8 MB per million).
const (
	DefaultMaxUsers      = 100_000
	DefaultMaxAddresses  = 20_000
	DefaultMaxSuppressed = 10_000_000
	DefaultStale         = 30 * time.Minute
)

// Cache answers lookups of users and suppressions. The zero value is not usable: see New.
type Cache struct {
	client  heraldv1.ContactsServiceClient
	poller  *coherent.Poller
	users   *coherent.Cache[*User] // nil: no such user
	addrs   *coherent.Cache[[]preference.Suppression]
	set     *addressSet
	batcher *batch.Batcher[lookup, *answer]
	metrics *metrics
	log     *slog.Logger
	stale   time.Duration

	reload chan struct{} // the set must be loaded again
	start  sync.Once     // the background work starts with the first lookup
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

// New returns a Cache that reads the contacts service on conn, which must carry the key of an
// app with contacts read access (appkey.Credentials). From the first lookup on, it loads the set
// of suppressed addresses in the background; lookups call the contacts service for addresses
// until it is loaded. Nothing reaches the contacts service before the first lookup, so a
// process that starts before it does not find its connection backing off from failed attempts
// when the first lookups come. Close stops it.
func New(conn grpc.ClientConnInterface, opts Options) *Cache {
	opts.MaxUsers = cmp.Or(opts.MaxUsers, DefaultMaxUsers)
	opts.MaxAddresses = cmp.Or(opts.MaxAddresses, DefaultMaxAddresses)
	opts.MaxSuppressed = cmp.Or(opts.MaxSuppressed, DefaultMaxSuppressed)
	opts.Stale = cmp.Or(opts.Stale, DefaultStale)
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	c := &Cache{
		client: heraldv1.NewContactsServiceClient(conn),
		set:    newAddressSet(opts.MaxSuppressed),
		log:    opts.Log,
		stale:  opts.Stale,
		reload: make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	c.metrics = newMetrics(opts.Metrics, c.set)
	c.poller = coherent.NewPoller(&feed{client: c.client, calls: c.metrics.changeCalls}, opts.Stale)
	c.users = coherent.NewCache[*User](c.poller, opts.MaxUsers)
	c.addrs = coherent.NewCache[[]preference.Suppression](c.poller, opts.MaxAddresses)
	c.poller.Watch(c.changed)
	// Each lookup asks for a handful of users and addresses: 64 of them fit a call.
	c.batcher = batch.New(c.resolveBatch, 64, 4)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c
}

// Close stops the background work. Lookups in progress may fail.
func (c *Cache) Close() {
	c.cancel()
	c.start.Do(func() { close(c.done) }) // never started
	<-c.done
	c.batcher.Close()
}

// changed is the poller's watcher: it keeps the set as fresh as the caches.
func (c *Cache) changed(keys []string, all bool) {
	if all {
		c.set.forget()
		select {
		case c.reload <- struct{}{}:
		default:
		}
	}
	for _, k := range keys {
		if len(k) > 2 && k[:2] == "a:" {
			c.set.add(c.set.hashKey(k)) // a false member costs one lookup, a missing one a send
		}
	}
}

// Feed keys, as the contacts service writes them (see ContactsService.ListChanges).
func userKey(id string) string                           { return "u:" + id }
func addressKey(ch delivery.Channel, addr string) string { return "a:" + string(ch) + ":" + addr }

// run loads the set, then reloads it when the caches forgot everything, and reads the feed
// every quarter of the stale bound meanwhile, so that a quiet process never goes stale.
func (c *Cache) run() {
	defer close(c.done)
	tick := time.NewTicker(max(c.stale/4, time.Second))
	defer tick.Stop()
	backoff := time.Second
	load := true
	for {
		if load {
			ctx, cancel := context.WithTimeout(c.ctx, 10*time.Minute)
			err := c.load(ctx)
			cancel()
			switch {
			case errors.Is(err, errVoided):
				continue // the caches forgot everything while it loaded: load again
			case err == nil || errors.Is(err, errTooMany):
				load, backoff = false, time.Second
			case c.ctx.Err() != nil:
				return
			default:
				c.log.Warn("load the suppressed addresses; lookups call the contacts service meanwhile", "err", err,
					"retry_in", backoff)
				select {
				case <-c.ctx.Done():
					return
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, time.Minute)
				continue
			}
		}
		select {
		case <-c.ctx.Done():
			return
		case <-c.reload:
			load = true
		case <-tick.C:
			ctx, cancel := context.WithTimeout(c.ctx, time.Minute)
			if err := c.poller.Sync(ctx); err != nil && c.ctx.Err() == nil {
				c.log.Debug("read the contacts change feed", "err", err)
			}
			cancel()
		}
	}
}

var (
	errTooMany = errors.New("too many suppressed addresses to hold")
	errVoided  = errors.New("the load was voided by a forget")
)

// load reads every suppressed address into a new set. A poll of the feed comes first, so the
// feed has a horizon from before the load: every change the pages could miss (committed
// after the load began) is reported by a later poll, which adds it to the load's record.
func (c *Cache) load(ctx context.Context) error {
	if err := c.poller.Sync(ctx); err != nil {
		return err
	}
	gen := c.set.beginLoad()
	select {
	case <-c.reload: // a forget before beginLoad is served by this load; one after voids it
	default:
	}
	var hashes []uint64
	req := &heraldv1.ListSuppressedAddressesRequest{PageSize: 10_000}
	for {
		res, err := c.client.ListSuppressedAddresses(ctx, req, grpc.WaitForReady(true))
		c.metrics.addressCalls.Inc()
		if err != nil {
			c.set.abandon(gen)
			return err
		}
		for _, a := range res.GetAddresses() {
			hashes = append(hashes, c.set.hash(string(protoconv.ChannelDomain[a.GetChannel()]), a.GetAddress()))
		}
		if len(hashes) > c.set.max {
			c.set.abandon(gen)
			c.log.Warn("more suppressed addresses than the set may hold: every address is looked up", "max", c.set.max)
			return errTooMany
		}
		if res.GetNextPageToken() == "" {
			break
		}
		req = &heraldv1.ListSuppressedAddressesRequest{PageSize: req.PageSize, PageToken: res.GetNextPageToken()}
	}
	hashes = sortedSet(hashes)
	if !c.set.install(gen, hashes) {
		return errVoided
	}
	c.log.Info("loaded the suppressed addresses", "addresses", len(hashes))
	return nil
}

// Resolve returns, for each of ids, the user (nil when there is no such user), and the
// suppressions on targets and on those users' own addresses. Whatever the contacts service
// acknowledged before began, it sees. What it returns is shared: never change it.
// Errors: Unavailable (the contacts service cannot be reached), Invalid (it refused a lookup).
func (c *Cache) Resolve(ctx context.Context, began time.Time, ids []string, targets []Target) ([]*User, []preference.Suppression, error) {
	c.start.Do(func() { go c.run() })
	userGen, err := c.users.SyncSince(ctx, began)
	if err != nil {
		return nil, nil, unavailable(err)
	}
	addrGen, err := c.addrs.SyncSince(ctx, began) // the same poll: no wait
	if err != nil {
		return nil, nil, unavailable(err)
	}
	users := make([]*User, len(ids))
	var sups []preference.Suppression
	var missIDs []string
	var missAt []int // where each of missIDs is in ids
	var missAddrs []Target
	for i, id := range ids {
		u, ok := c.users.Get(userKey(id))
		if !ok {
			c.metrics.userMisses.Inc()
			missIDs, missAt = append(missIDs, id), append(missAt, i)
			continue
		}
		c.metrics.userHits.Inc()
		users[i] = u
		if u != nil {
			u.eachAddress(func(t Target) { sups, missAddrs = c.lookUp(t, sups, missAddrs) })
		}
	}
	for _, t := range targets {
		sups, missAddrs = c.lookUp(t, sups, missAddrs)
	}
	for start := 0; start < len(missIDs)+len(missAddrs); start += maxCall {
		// Users first, then addresses, at most maxCall of them together a lookup.
		first := min(start, len(missIDs))
		l := lookup{ids: missIDs[first:min(start+maxCall, len(missIDs))]}
		if start+maxCall > len(missIDs) {
			from := max(start-len(missIDs), 0)
			l.targets = missAddrs[from:min(from+maxCall-len(l.ids), len(missAddrs))]
		}
		a, err := c.batcher.Do(ctx, l)
		if err != nil {
			return nil, nil, err
		}
		for i, id := range l.ids {
			u := a.users[id]
			c.users.Put(userGen, userKey(id), u)
			users[missAt[first+i]] = u
			if u != nil {
				u.eachAddress(func(t Target) { sups = c.found(addrGen, a, t, sups) })
			}
		}
		for _, t := range l.targets {
			sups = c.found(addrGen, a, t, sups)
		}
	}
	return users, sups, nil
}

// maxCall bounds one ResolveRecipients call: the service takes at most 1,000 users and targets.
const maxCall = 1000

// lookUp answers t's suppressions from the set or the exact cache, appending them to sups, or
// appends t to misses.
func (c *Cache) lookUp(t Target, sups []preference.Suppression, misses []Target) ([]preference.Suppression, []Target) {
	if member, known := c.set.has(c.set.hash(string(t.Channel), t.Address)); known && !member {
		c.metrics.setHits.Inc()
		return sups, misses
	}
	list, ok := c.addrs.Get(addressKey(t.Channel, t.Address))
	if !ok {
		c.metrics.addressMisses.Inc()
		return sups, append(misses, t)
	}
	c.metrics.addressHits.Inc()
	return append(sups, list...), misses
}

// found takes t's suppressions from a call's answer, caching them when the set does not rule
// them out already.
func (c *Cache) found(gen uint64, a *answer, t Target, sups []preference.Suppression) []preference.Suppression {
	list := a.sups[t]
	if member, known := c.set.has(c.set.hash(string(t.Channel), t.Address)); member || !known {
		c.addrs.Put(gen, addressKey(t.Channel, t.Address), list)
	}
	return append(sups, list...)
}

func (u *User) eachAddress(fn func(Target)) {
	if u.Email != "" {
		fn(Target{delivery.Email, u.Email})
	}
	if u.Phone != "" {
		fn(Target{delivery.SMS, u.Phone})
	}
	for _, t := range u.IOSTokens {
		fn(Target{delivery.IOS, t})
	}
	for _, t := range u.AndroidTokens {
		fn(Target{delivery.Android, t})
	}
}

// lookup is what one Resolve could not answer from the caches.
type lookup struct {
	ids     []string
	targets []Target
}

// answer is a ResolveRecipients call's answer, shared by the lookups it served: a suppression
// only ever matches its own address, so each lookup takes its own.
type answer struct {
	users map[string]*User // only the users that exist
	sups  map[Target][]preference.Suppression
}

// resolveBatch merges concurrent lookups into calls within the service's limit.
func (c *Cache) resolveBatch(ctx context.Context, ls []lookup) ([]*answer, []error, error) {
	out := make([]*answer, len(ls))
	errs := make([]error, len(ls))
	for start := 0; start < len(ls); {
		req := &heraldv1.ResolveRecipientsRequest{}
		end, size := start, 0
		for end < len(ls) && (end == start || size+len(ls[end].ids)+len(ls[end].targets) <= maxCall) {
			size += len(ls[end].ids) + len(ls[end].targets)
			req.UserIds = append(req.UserIds, ls[end].ids...)
			for _, t := range ls[end].targets {
				req.Targets = append(req.Targets, &heraldv1.Target{Channel: protoconv.ChannelProto[t.Channel], Address: t.Address})
			}
			end++
		}
		a, err := c.call(ctx, req)
		for i := start; i < end; i++ {
			out[i], errs[i] = a, err
		}
		start = end
	}
	return out, errs, nil
}

func (c *Cache) call(ctx context.Context, req *heraldv1.ResolveRecipientsRequest) (*answer, error) {
	res, err := c.client.ResolveRecipients(ctx, req)
	c.metrics.resolveCalls.Inc()
	if err != nil {
		if status.Code(err) == codes.InvalidArgument {
			return nil, errs.Wrap(errs.Invalid, err, "the recipient is not valid: "+status.Convert(err).Message())
		}
		return nil, unavailable(err)
	}
	a := &answer{users: make(map[string]*User, len(res.GetUsers())), sups: map[Target][]preference.Suppression{}}
	for _, r := range res.GetUsers() {
		pu := r.GetUser()
		u := &User{ID: pu.GetUserId(), Email: pu.GetEmail(), Phone: pu.GetPhone(), Locale: pu.GetLocale(),
			Timezone: pu.GetTimezone()}
		for _, d := range r.GetDevices() {
			if app := d.GetApp(); app != "" {
				if u.DeviceApps == nil {
					u.DeviceApps = map[string]string{}
				}
				u.DeviceApps[d.GetToken()] = app
			}
			switch protoconv.PlatformDomain[d.GetPlatform()] {
			case delivery.IOS:
				u.IOSTokens = append(u.IOSTokens, d.GetToken())
			case delivery.Android:
				u.AndroidTokens = append(u.AndroidTokens, d.GetToken())
			}
		}
		if r.Settings != nil {
			// The contacts service validated the settings when they were stored.
			u.Settings, _ = protoconv.SettingsDomain(r.Settings)
		}
		a.users[u.ID] = u
	}
	for _, s := range res.GetSuppressions() {
		sup := preference.Suppression{Channel: protoconv.ChannelDomain[s.GetChannel()], Address: s.GetAddress(),
			Category: s.GetCategory(), Reason: s.GetReason(), Invalid: s.GetInvalid()}
		t := Target{sup.Channel, sup.Address}
		a.sups[t] = append(a.sups[t], sup)
	}
	return a, nil
}

func unavailable(err error) error {
	return errs.Wrap(errs.Unavailable, err, "the contacts service is unavailable; try again")
}

// feed reads the contacts service's change feed for the poller (coherent.Feed).
type feed struct {
	client heraldv1.ContactsServiceClient
	calls  prometheus.Counter
}

// maxListed is how many changed keys a poll reads before it gives up and forgets everything
// instead: a reader that far behind would spend longer evicting than reloading.
const maxListed = 100_000

// Changes implements coherent.Feed.
func (f *feed) Changes(ctx context.Context, horizon uint64) ([]string, uint64, error) {
	var keys []string
	req := &heraldv1.ListChangesRequest{Horizon: horizon}
	for {
		res, err := f.client.ListChanges(ctx, req)
		f.calls.Inc()
		if err != nil {
			return nil, 0, fmt.Errorf("list changes: %w", err)
		}
		keys = append(keys, res.GetKeys()...)
		if res.GetNextPageToken() == "" {
			return keys, res.GetNextHorizon(), nil
		}
		if len(keys) > maxListed {
			res, err := f.client.ListChanges(ctx, &heraldv1.ListChangesRequest{}) // where the feed ends now
			f.calls.Inc()
			if err != nil {
				return nil, 0, fmt.Errorf("list changes: %w", err)
			}
			return nil, res.GetNextHorizon(), coherent.ErrTooManyChanges
		}
		req = &heraldv1.ListChangesRequest{Horizon: horizon, PageToken: res.GetNextPageToken()}
	}
}
