// Package contacts looks up recipients in the contacts service over gRPC.
package contacts

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/errs"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/notifier"
)

// Directory implements notifier.Directory with ContactsService.BatchGetUsers. It forwards the
// calling app's key, so the contacts service authorises the app itself.
type Directory struct {
	client heraldv1.ContactsServiceClient
}

var _ notifier.Directory = (*Directory)(nil)

// New returns a Directory on conn.
func New(conn grpc.ClientConnInterface) *Directory {
	return &Directory{client: heraldv1.NewContactsServiceClient(conn)}
}

// Users implements notifier.Directory.
func (d *Directory) Users(ctx context.Context, ids []string) (map[string]notifier.User, error) {
	if tok := appkey.Token(ctx); tok != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	}
	res, err := d.client.BatchGetUsers(ctx, &heraldv1.BatchGetUsersRequest{UserIds: ids})
	if err != nil {
		if status.Code(err) == codes.InvalidArgument {
			return nil, errs.Wrap(errs.Invalid, err, "the recipient's user id is not valid")
		}
		return nil, errs.Wrap(errs.Unavailable, err, "the contacts service is unavailable; try again")
	}
	out := make(map[string]notifier.User, len(res.GetUsers()))
	for _, u := range res.GetUsers() {
		out[u.GetUserId()] = notifier.User{ID: u.GetUserId(), Email: u.GetEmail(), Phone: u.GetPhone(), Locale: u.GetLocale()}
	}
	return out, nil
}
