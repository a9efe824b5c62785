// Package contacts looks up recipients in the contacts service over gRPC.
package contacts

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/preference"
	"github.com/heraldhq/herald/internal/protoconv"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/notifier"
)

// Directory implements notifier.Directory with ContactsService.ResolveRecipients. It forwards
// the calling app's key, so the contacts service authorises the app itself.
type Directory struct {
	client heraldv1.ContactsServiceClient
}

var _ notifier.Directory = (*Directory)(nil)

// New returns a Directory on conn.
func New(conn grpc.ClientConnInterface) *Directory {
	return &Directory{client: heraldv1.NewContactsServiceClient(conn)}
}

// Resolve implements notifier.Directory.
func (d *Directory) Resolve(ctx context.Context, userIDs []string, targets []notifier.Target) (*notifier.Recipients, error) {
	if tok := appkey.Token(ctx); tok != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	}
	req := &heraldv1.ResolveRecipientsRequest{UserIds: userIDs}
	for _, t := range targets {
		req.Targets = append(req.Targets, &heraldv1.Target{Channel: protoconv.ChannelProto[t.Channel], Address: t.Address})
	}
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
