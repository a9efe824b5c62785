package rpc

import (
	"context"
	"fmt"
	"math"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/protoconv"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/notifier"
)

func appProto(a *notifier.App) *heraldv1.App {
	out := &heraldv1.App{
		AppId: a.ID.String(), Name: a.Name, Admin: a.Admin, CreateTime: timestamppb.New(a.CreatedAt),
		AllowedCategories: a.AllowedCategories, RequestsPerSecond: a.RatePerSecond, Burst: int32(a.Burst),
		ContactsAccess: contactsAccessProto[a.Contacts],
	}
	for _, ch := range a.AllowedChannels {
		out.AllowedChannels = append(out.AllowedChannels, protoconv.ChannelProto[ch])
	}
	return out
}

var (
	contactsAccessDomain = map[heraldv1.ContactsAccess]appkey.ContactsAccess{
		heraldv1.ContactsAccess_CONTACTS_ACCESS_UNSPECIFIED: appkey.ContactsNone,
		heraldv1.ContactsAccess_CONTACTS_ACCESS_READ:        appkey.ContactsRead,
		heraldv1.ContactsAccess_CONTACTS_ACCESS_WRITE:       appkey.ContactsWrite,
	}
	contactsAccessProto = map[appkey.ContactsAccess]heraldv1.ContactsAccess{
		appkey.ContactsNone:  heraldv1.ContactsAccess_CONTACTS_ACCESS_UNSPECIFIED,
		appkey.ContactsRead:  heraldv1.ContactsAccess_CONTACTS_ACCESS_READ,
		appkey.ContactsWrite: heraldv1.ContactsAccess_CONTACTS_ACCESS_WRITE,
	}
)

// contactsAccess returns the level a request names. A value the API does not define becomes
// a level appkey does not define either, which the service refuses as invalid.
func contactsAccess(a heraldv1.ContactsAccess) appkey.ContactsAccess {
	if d, ok := contactsAccessDomain[a]; ok {
		return d
	}
	return math.MaxUint8
}

func allowedChannels(chs []heraldv1.Channel) ([]delivery.Channel, error) {
	var v errs.Violations
	var out []delivery.Channel
	if !v.Count("allowed_channels", len(chs), len(protoconv.ChannelDomain)) {
		return nil, v.Err()
	}
	for i, ch := range chs {
		d, ok := protoconv.ChannelDomain[ch]
		if !ok {
			v.Add(fmt.Sprintf("allowed_channels[%d]", i), "is not a channel")
			continue
		}
		out = append(out, d)
	}
	return out, v.Err()
}

func keyProto(k notifier.KeyInfo) *heraldv1.KeyInfo {
	return &heraldv1.KeyInfo{KeyId: k.ID, AppId: k.AppID.String(), CreateTime: timestamppb.New(k.CreatedAt),
		RevokeTime: optTime(k.RevokedAt)}
}

// CreateApp implements AdminService.CreateApp.
func (s *Server) CreateApp(ctx context.Context, req *heraldv1.CreateAppRequest) (*heraldv1.CreateAppResponse, error) {
	c, err := admin(ctx, "create apps")
	if err != nil {
		return nil, err
	}
	chs, err := allowedChannels(req.GetAllowedChannels())
	if err != nil {
		return nil, err
	}
	a := &notifier.App{Name: req.GetName(), Admin: req.GetAdmin(), AllowedCategories: req.GetAllowedCategories(),
		AllowedChannels: chs, RatePerSecond: req.GetRequestsPerSecond(), Burst: int(req.GetBurst()),
		Contacts: contactsAccess(req.GetContactsAccess())}
	key, err := s.Apps.CreateApp(ctx, c, a)
	if err != nil {
		return nil, err
	}
	return &heraldv1.CreateAppResponse{App: appProto(a), Key: key.String(), KeyId: key.ID}, nil
}

// UpdateApp implements AdminService.UpdateApp.
func (s *Server) UpdateApp(ctx context.Context, req *heraldv1.UpdateAppRequest) (*heraldv1.UpdateAppResponse, error) {
	c, err := admin(ctx, "change apps")
	if err != nil {
		return nil, err
	}
	in := req.GetApp()
	id, err := uuid.Parse(in.GetAppId())
	if err != nil {
		return nil, errs.Field("app.app_id", "must be an app id (a UUID)")
	}
	chs, err := allowedChannels(in.GetAllowedChannels())
	if err != nil {
		return nil, err
	}
	a := &notifier.App{ID: id, AllowedCategories: in.GetAllowedCategories(), AllowedChannels: chs,
		RatePerSecond: in.GetRequestsPerSecond(), Burst: int(in.GetBurst()), Contacts: contactsAccess(in.GetContactsAccess())}
	if err := s.Apps.UpdateApp(ctx, c, a); err != nil {
		return nil, err
	}
	return &heraldv1.UpdateAppResponse{App: appProto(a)}, nil
}

// ListApps implements AdminService.ListApps.
func (s *Server) ListApps(ctx context.Context, _ *heraldv1.ListAppsRequest) (*heraldv1.ListAppsResponse, error) {
	c, err := admin(ctx, "list apps")
	if err != nil {
		return nil, err
	}
	apps, err := s.Apps.ListApps(ctx, c)
	if err != nil {
		return nil, err
	}
	out := &heraldv1.ListAppsResponse{}
	for i := range apps {
		out.Apps = append(out.Apps, appProto(&apps[i]))
	}
	return out, nil
}

// IssueKey implements AdminService.IssueKey.
func (s *Server) IssueKey(ctx context.Context, req *heraldv1.IssueKeyRequest) (*heraldv1.IssueKeyResponse, error) {
	c, err := admin(ctx, "issue keys")
	if err != nil {
		return nil, err
	}
	id, err := uuid.Parse(req.GetAppId())
	if err != nil {
		return nil, errs.Field("app_id", "must be an app id (a UUID)")
	}
	key, err := s.Apps.IssueKey(ctx, c, id)
	if err != nil {
		return nil, err
	}
	return &heraldv1.IssueKeyResponse{Key: key.String(), KeyId: key.ID}, nil
}

// RevokeKey implements AdminService.RevokeKey.
func (s *Server) RevokeKey(ctx context.Context, req *heraldv1.RevokeKeyRequest) (*heraldv1.RevokeKeyResponse, error) {
	c, err := admin(ctx, "revoke keys")
	if err != nil {
		return nil, err
	}
	k, err := s.Apps.RevokeKey(ctx, c, req.GetKeyId())
	if err != nil {
		return nil, err
	}
	return &heraldv1.RevokeKeyResponse{Key: keyProto(k)}, nil
}

// ListKeys implements AdminService.ListKeys.
func (s *Server) ListKeys(ctx context.Context, req *heraldv1.ListKeysRequest) (*heraldv1.ListKeysResponse, error) {
	c, err := admin(ctx, "list keys")
	if err != nil {
		return nil, err
	}
	id, err := uuid.Parse(req.GetAppId())
	if err != nil {
		return nil, errs.Field("app_id", "must be an app id (a UUID)")
	}
	keys, err := s.Apps.ListKeys(ctx, c, id)
	if err != nil {
		return nil, err
	}
	out := &heraldv1.ListKeysResponse{}
	for _, k := range keys {
		out.Keys = append(out.Keys, keyProto(k))
	}
	return out, nil
}
