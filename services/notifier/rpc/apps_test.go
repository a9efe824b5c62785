package rpc

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/errs"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

// TestAppContactsAccess: an app's contacts access goes in with CreateApp and UpdateApp and
// comes back in the answers; UpdateApp without it resets it to none; a value the API does not
// define is refused naming the field.
func TestAppContactsAccess(t *testing.T) {
	store := newStrictStore()
	srv := newServer(store)
	ctx := appkey.WithCaller(context.Background(), adminCaller)

	created, err := srv.CreateApp(ctx, &heraldv1.CreateAppRequest{Name: "crm",
		ContactsAccess: heraldv1.ContactsAccess_CONTACTS_ACCESS_READ})
	if err != nil {
		t.Fatal(err)
	}
	if got := created.App.ContactsAccess; got != heraldv1.ContactsAccess_CONTACTS_ACCESS_READ {
		t.Errorf("CreateApp answered contacts access %s", got)
	}
	id := uuid.MustParse(created.App.AppId)
	if got := store.apps[id].Contacts; got != appkey.ContactsRead {
		t.Errorf("stored contacts access %s, want read", got)
	}
	for _, tt := range []struct {
		in   heraldv1.ContactsAccess
		want appkey.ContactsAccess
	}{
		{heraldv1.ContactsAccess_CONTACTS_ACCESS_WRITE, appkey.ContactsWrite},
		{heraldv1.ContactsAccess_CONTACTS_ACCESS_UNSPECIFIED, appkey.ContactsNone},
	} {
		res, err := srv.UpdateApp(ctx, &heraldv1.UpdateAppRequest{App: &heraldv1.App{AppId: id.String(), ContactsAccess: tt.in}})
		if err != nil || res.App.ContactsAccess != tt.in {
			t.Errorf("UpdateApp(%s) = %v, %v", tt.in, res, err)
		}
		if got := store.apps[id].Contacts; got != tt.want {
			t.Errorf("UpdateApp(%s) stored %s, want %s", tt.in, got, tt.want)
		}
	}

	bad := heraldv1.ContactsAccess(7)
	_, err = srv.CreateApp(ctx, &heraldv1.CreateAppRequest{Name: "odd", ContactsAccess: bad})
	if st := errs.Status(err); st.Code() != codes.InvalidArgument || violation(err, "contacts_access") == "" {
		t.Errorf("CreateApp with contacts access %d: %v, want INVALID_ARGUMENT naming contacts_access", bad, err)
	}
	_, err = srv.UpdateApp(ctx, &heraldv1.UpdateAppRequest{App: &heraldv1.App{AppId: id.String(), ContactsAccess: bad}})
	if st := errs.Status(err); st.Code() != codes.InvalidArgument || violation(err, "contacts_access") == "" {
		t.Errorf("UpdateApp with contacts access %d: %v, want INVALID_ARGUMENT naming contacts_access", bad, err)
	}
	if p := store.Problems(); len(p) > 0 {
		t.Errorf("reached the store: %q", p)
	}
}
