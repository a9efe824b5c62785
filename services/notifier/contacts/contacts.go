// Package contacts looks up recipients for the notifier: from a cache kept exact by the
// contacts service's change feed (internal/contactscache), calling the service over gRPC only
// for what the cache cannot answer.
package contacts

import (
	"context"

	"google.golang.org/grpc"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald/internal/coherent"
	"github.com/heraldhq/herald/internal/contactscache"
	"github.com/heraldhq/herald/internal/errs"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/notifier"
)

// Directory implements notifier.Directory with a contactscache.Cache. A known user, and an
// address with no suppression, are answered from memory; the misses of concurrent Sends share
// ResolveRecipients calls. A Send sees every change the contacts service acknowledged before
// the Send began. It calls with the notifier's own key, which the connection carries (see New),
// whichever app is sending: an app may send to a user without being allowed to read the user's
// contact data, and the lookups of several apps share the cache and the calls.
type Directory struct {
	cache *contactscache.Cache
}

var _ notifier.Directory = (*Directory)(nil)

// New returns a Directory on conn, which must carry the notifier's own app key
// (appkey.Credentials), of an app with contacts read access. Its metrics go to reg (nil: none).
// Close stops it.
func New(conn grpc.ClientConnInterface, reg prometheus.Registerer) *Directory {
	return &Directory{cache: contactscache.New(conn, contactscache.Options{Metrics: reg})}
}

// Close stops the cache's background work.
func (d *Directory) Close() { d.cache.Close() }

// Resolve implements notifier.Directory.
func (d *Directory) Resolve(ctx context.Context, userIDs []string, targets []notifier.Target) (*notifier.Recipients, error) {
	users, sups, err := d.cache.Resolve(ctx, coherent.Began(ctx), userIDs, targets)
	if err != nil {
		return nil, err
	}
	r := &notifier.Recipients{Suppressions: sups}
	for i, u := range users {
		if u == nil {
			continue
		}
		if r.Users == nil {
			r.Users = make(map[string]notifier.User, len(users))
		}
		r.Users[userIDs[i]] = *u
	}
	return r, nil
}

// Subscribers implements notifier.SubscriberLister with ContactsService.ListSubscribers, with
// the key the connection carries (the notifier's own).
type Subscribers struct {
	client heraldv1.ContactsServiceClient
}

var _ notifier.SubscriberLister = (*Subscribers)(nil)

// NewSubscribers returns a SubscriberLister on conn, which must carry the notifier's own app
// key (appkey.Credentials), of an app with contacts read access.
func NewSubscribers(conn grpc.ClientConnInterface) *Subscribers {
	return &Subscribers{client: heraldv1.NewContactsServiceClient(conn)}
}

// Subscribers implements notifier.SubscriberLister.
func (s *Subscribers) Subscribers(ctx context.Context, topic, page string, max int) ([]string, string, error) {
	res, err := s.client.ListSubscribers(ctx, &heraldv1.ListSubscribersRequest{Topic: topic, PageSize: int32(max), PageToken: page})
	if err != nil {
		return nil, "", errs.Wrap(errs.Unavailable, err, "list the topic's subscribers")
	}
	return res.GetUserIds(), res.GetNextPageToken(), nil
}
