package rpc

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/errs"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

// invalidAdminRequests holds, for each AdminService method, a request it refuses as invalid
// (INVALID_ARGUMENT), or nil for a method whose request has nothing to get wrong. A method
// missing here fails TestAdminMethodsCheckPermissionFirst.
var invalidAdminRequests = map[string]proto.Message{
	"CreateApp":          &heraldv1.CreateAppRequest{Name: "crm", AllowedChannels: []heraldv1.Channel{99}},
	"UpdateApp":          &heraldv1.UpdateAppRequest{App: &heraldv1.App{AppId: "not-a-uuid"}},
	"ListApps":           nil,
	"IssueKey":           &heraldv1.IssueKeyRequest{AppId: "not-a-uuid"},
	"RevokeKey":          &heraldv1.RevokeKeyRequest{},
	"ListKeys":           &heraldv1.ListKeysRequest{AppId: "not-a-uuid"},
	"PutCategory":        &heraldv1.PutCategoryRequest{},
	"ListDeadLetters":    &heraldv1.ListDeadLettersRequest{Channel: 99},
	"RedriveDeadLetters": &heraldv1.RedriveDeadLettersRequest{DeliveryIds: []string{"not-a-uuid"}},
	"GetQueueStats":      nil,
	"GetDeliveryStats":   &heraldv1.GetDeliveryStatsRequest{Period: &durationpb.Duration{Seconds: 1, Nanos: -1}},
}

// openAdminMethods are the AdminService methods any app may call.
var openAdminMethods = map[string]bool{"ListCategories": true}

// TestAdminMethodsCheckPermissionFirst calls every AdminService method (from the service
// descriptor, so a method added later is covered) as an app without admin rights, with a
// request that is invalid and with an empty one. Each is refused with PERMISSION_DENIED, and
// the same answer both times: a caller that may not use a method learns nothing from its
// validation. As an admin app, the invalid requests are indeed refused as invalid.
func TestAdminMethodsCheckPermissionFirst(t *testing.T) {
	srv := newServer(newStrictStore())
	nonAdmin := appkey.WithCaller(context.Background(), appkey.Caller{AppID: uuid.New(), AppName: "shop",
		Contacts: appkey.ContactsWrite})
	admin := appkey.WithCaller(context.Background(), adminCaller)
	answer := func(err error) string { return prototext.Format(errs.Status(err).Proto()) }

	for _, m := range heraldv1.AdminService_ServiceDesc.Methods {
		t.Run(m.MethodName, func(t *testing.T) {
			call := func(ctx context.Context, req proto.Message) error {
				_, err := m.Handler(srv, ctx, func(v any) error {
					if req != nil {
						proto.Merge(v.(proto.Message), req)
					}
					return nil
				}, nil)
				return err
			}
			if openAdminMethods[m.MethodName] {
				if err := call(nonAdmin, nil); err != nil {
					t.Errorf("an app without admin rights: %v, want an answer", err)
				}
				return
			}
			invalid, ok := invalidAdminRequests[m.MethodName]
			if !ok {
				t.Fatalf("AdminService.%s is not in invalidAdminRequests: add a request it refuses as invalid (or nil), or list it in openAdminMethods", m.MethodName)
			}
			empty := call(nonAdmin, nil)
			if st := errs.Status(empty); st.Code() != codes.PermissionDenied {
				t.Errorf("an empty request from an app without admin rights: %v, want PERMISSION_DENIED", empty)
			}
			if invalid == nil {
				return
			}
			if err := call(nonAdmin, invalid); answer(err) != answer(empty) {
				t.Errorf("an invalid request from an app without admin rights: answered\n%s\nbut an empty one\n%s", answer(err), answer(empty))
			}
			if err := call(admin, invalid); errs.Status(err).Code() != codes.InvalidArgument {
				t.Errorf("the invalid request from an admin app: %v, want INVALID_ARGUMENT (the test's request is not invalid)", err)
			}
		})
	}
}
