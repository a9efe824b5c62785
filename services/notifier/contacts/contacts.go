// Package contacts looks up recipients in the contacts service over gRPC.
package contacts

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/heraldhq/herald/internal/batch"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/preference"
	"github.com/heraldhq/herald/internal/protoconv"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/notifier"
)

// Directory implements notifier.Directory with ContactsService.ResolveRecipients. Concurrent
// lookups share one call (up to the service's limit of 1,000 users and targets), so a busy
// notifier costs the contacts service one round trip per batch, not per Send. It calls with the
// notifier's own key, which the connection carries (see New), whichever app is sending: an app
// may send to a user without being allowed to read the user's contact data, and lookups of
// several apps share a call.
type Directory struct {
	client  heraldv1.ContactsServiceClient
	batcher *batch.Batcher[lookup, *notifier.Recipients]
}

type lookup struct {
	userIDs []string
	targets []notifier.Target
}

// maxLookup bounds one merged call: the service takes at most 1,000 users and targets.
const maxLookup = 1000

var _ notifier.Directory = (*Directory)(nil)

// New returns a Directory on conn, which must carry the notifier's own app key
// (appkey.Credentials), of an app with contacts read access.
func New(conn grpc.ClientConnInterface) *Directory {
	d := &Directory{client: heraldv1.NewContactsServiceClient(conn)}
	// Each Send looks up at most about 100 targets (the token limit), usually a handful.
	d.batcher = batch.New(d.resolveBatch, 64, 4)
	return d
}

// Resolve implements notifier.Directory.
func (d *Directory) Resolve(ctx context.Context, userIDs []string, targets []notifier.Target) (*notifier.Recipients, error) {
	return d.batcher.Do(ctx, lookup{userIDs: userIDs, targets: targets})
}

// resolveBatch merges lookups into calls within the service's limit and answers each lookup
// with its users. Every lookup gets all the suppressions the call found: a suppression only
// ever matches its own address, so the others' are harmless.
func (d *Directory) resolveBatch(ctx context.Context, ls []lookup) ([]*notifier.Recipients, []error, error) {
	out := make([]*notifier.Recipients, len(ls))
	errs := make([]error, len(ls))
	for start := 0; start < len(ls); {
		req := &heraldv1.ResolveRecipientsRequest{}
		end, size := start, 0
		for end < len(ls) && (end == start || size+len(ls[end].userIDs)+len(ls[end].targets) <= maxLookup) {
			size += len(ls[end].userIDs) + len(ls[end].targets)
			req.UserIds = append(req.UserIds, ls[end].userIDs...)
			for _, t := range ls[end].targets {
				req.Targets = append(req.Targets, &heraldv1.Target{Channel: protoconv.ChannelProto[t.Channel], Address: t.Address})
			}
			end++
		}
		found, err := d.call(ctx, req)
		for i := start; i < end; i++ {
			if err != nil {
				errs[i] = err
				continue
			}
			r := &notifier.Recipients{Users: map[string]notifier.User{}, Suppressions: found.Suppressions}
			for _, id := range ls[i].userIDs {
				if u, ok := found.Users[id]; ok {
					r.Users[id] = u
				}
			}
			out[i] = r
		}
		start = end
	}
	return out, errs, nil
}

func (d *Directory) call(ctx context.Context, req *heraldv1.ResolveRecipientsRequest) (*notifier.Recipients, error) {
	res, err := d.client.ResolveRecipients(ctx, req)
	if err != nil {
		if status.Code(err) == codes.InvalidArgument {
			return nil, errs.Wrap(errs.Invalid, err, "the recipient is not valid: "+status.Convert(err).Message())
		}
		return nil, errs.Wrap(errs.Unavailable, err, "the contacts service is unavailable; try again")
	}
	out := &notifier.Recipients{Users: make(map[string]notifier.User, len(res.GetUsers()))}
	for _, r := range res.GetUsers() {
		u := r.GetUser()
		nu := notifier.User{ID: u.GetUserId(), Email: u.GetEmail(), Phone: u.GetPhone(), Locale: u.GetLocale(),
			Timezone: u.GetTimezone()}
		for _, dev := range r.GetDevices() {
			switch protoconv.PlatformDomain[dev.GetPlatform()] {
			case delivery.IOS:
				nu.IOSTokens = append(nu.IOSTokens, dev.GetToken())
			case delivery.Android:
				nu.AndroidTokens = append(nu.AndroidTokens, dev.GetToken())
			}
		}
		if r.Settings != nil {
			// The contacts service validated the settings when they were stored.
			nu.Settings, _ = protoconv.SettingsDomain(r.Settings)
		}
		out.Users[nu.ID] = nu
	}
	for _, s := range res.GetSuppressions() {
		out.Suppressions = append(out.Suppressions, preference.Suppression{
			Channel: protoconv.ChannelDomain[s.GetChannel()], Address: s.GetAddress(), Category: s.GetCategory(),
			Reason: s.GetReason(), Invalid: s.GetInvalid(),
		})
	}
	return out, nil
}
