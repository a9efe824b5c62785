// Package rpc serves ContactsService over gRPC: it turns protos into domain calls and back.
// Every method first checks that the calling app may do what it asks with contact data (see
// appkey.ContactsAccess): read for the lookups, write for the changes.
package rpc

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/preference"
	"github.com/heraldhq/herald/internal/protoconv"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/contacts"
)

// Links issues preference-page links; the web package implements it.
type Links interface {
	// PreferenceLink returns a signed link to userID's preference page, valid for ttl.
	PreferenceLink(userID string, ttl time.Duration) (url string, expires time.Time, err error)
}

// allow returns nil if the calling app may do what need allows with contact data, and the
// PermissionDenied answer otherwise. Every handler calls it before it looks at the request, so a
// refusal is the same whatever the request names, and whether or not it is valid. A call with
// no authenticated caller (no appkey interceptor) may do nothing.
func allow(ctx context.Context, need appkey.ContactsAccess) error {
	c, _ := appkey.CallerFrom(ctx)
	return c.AllowContacts(need)
}

// Server implements heraldv1.ContactsServiceServer on a contacts.Service.
type Server struct {
	heraldv1.UnimplementedContactsServiceServer
	Service *contacts.Service
	Links   Links
}

// UpsertUser implements ContactsService.UpsertUser.
func (s *Server) UpsertUser(ctx context.Context, req *heraldv1.UpsertUserRequest) (*heraldv1.UpsertUserResponse, error) {
	if err := allow(ctx, appkey.ContactsWrite); err != nil {
		return nil, err
	}
	u := req.GetUser()
	if u == nil {
		return nil, errs.Field("user", "is required")
	}
	stored, err := s.Service.UpsertUser(ctx, &contacts.User{
		ID: u.GetUserId(), Email: u.GetEmail(), Phone: u.GetPhone(), Locale: u.GetLocale(), Timezone: u.GetTimezone(),
	})
	if err != nil {
		return nil, err
	}
	return &heraldv1.UpsertUserResponse{User: userProto(stored)}, nil
}

// GetUser implements ContactsService.GetUser.
func (s *Server) GetUser(ctx context.Context, req *heraldv1.GetUserRequest) (*heraldv1.GetUserResponse, error) {
	if err := allow(ctx, appkey.ContactsRead); err != nil {
		return nil, err
	}
	u, err := s.Service.GetUser(ctx, req.GetUserId())
	if err != nil {
		return nil, err
	}
	return &heraldv1.GetUserResponse{User: userProto(u)}, nil
}

// DeleteUser implements ContactsService.DeleteUser.
func (s *Server) DeleteUser(ctx context.Context, req *heraldv1.DeleteUserRequest) (*heraldv1.DeleteUserResponse, error) {
	if err := allow(ctx, appkey.ContactsWrite); err != nil {
		return nil, err
	}
	if err := s.Service.DeleteUser(ctx, req.GetUserId()); err != nil {
		return nil, err
	}
	return &heraldv1.DeleteUserResponse{}, nil
}

// BatchGetUsers implements ContactsService.BatchGetUsers.
func (s *Server) BatchGetUsers(ctx context.Context, req *heraldv1.BatchGetUsersRequest) (*heraldv1.BatchGetUsersResponse, error) {
	if err := allow(ctx, appkey.ContactsRead); err != nil {
		return nil, err
	}
	users, err := s.Service.BatchGetUsers(ctx, req.GetUserIds())
	if err != nil {
		return nil, err
	}
	out := &heraldv1.BatchGetUsersResponse{}
	for _, u := range users {
		out.Users = append(out.Users, userProto(u))
	}
	return out, nil
}

// RegisterDevice implements ContactsService.RegisterDevice.
func (s *Server) RegisterDevice(ctx context.Context, req *heraldv1.RegisterDeviceRequest) (*heraldv1.RegisterDeviceResponse, error) {
	if err := allow(ctx, appkey.ContactsWrite); err != nil {
		return nil, err
	}
	d := req.GetDevice()
	if d == nil {
		return nil, errs.Field("device", "is required")
	}
	stored, err := s.Service.RegisterDevice(ctx, &contacts.Device{
		UserID: d.GetUserId(), Platform: protoconv.PlatformDomain[d.GetPlatform()], Token: d.GetToken(), App: d.GetApp(),
	})
	if err != nil {
		return nil, err
	}
	return &heraldv1.RegisterDeviceResponse{Device: deviceProto(*stored)}, nil
}

// UnregisterDevice implements ContactsService.UnregisterDevice.
func (s *Server) UnregisterDevice(ctx context.Context, req *heraldv1.UnregisterDeviceRequest) (*heraldv1.UnregisterDeviceResponse, error) {
	if err := allow(ctx, appkey.ContactsWrite); err != nil {
		return nil, err
	}
	if err := s.Service.UnregisterDevice(ctx, protoconv.PlatformDomain[req.GetPlatform()], req.GetToken()); err != nil {
		return nil, err
	}
	return &heraldv1.UnregisterDeviceResponse{}, nil
}

// ListDevices implements ContactsService.ListDevices.
func (s *Server) ListDevices(ctx context.Context, req *heraldv1.ListDevicesRequest) (*heraldv1.ListDevicesResponse, error) {
	if err := allow(ctx, appkey.ContactsRead); err != nil {
		return nil, err
	}
	devices, err := s.Service.ListDevices(ctx, req.GetUserId(), req.GetIncludeInactive())
	if err != nil {
		return nil, err
	}
	out := &heraldv1.ListDevicesResponse{}
	for _, d := range devices {
		out.Devices = append(out.Devices, deviceProto(d))
	}
	return out, nil
}

// GetSettings implements ContactsService.GetSettings.
func (s *Server) GetSettings(ctx context.Context, req *heraldv1.GetSettingsRequest) (*heraldv1.GetSettingsResponse, error) {
	if err := allow(ctx, appkey.ContactsRead); err != nil {
		return nil, err
	}
	st, version, cats, err := s.Service.GetSettings(ctx, req.GetUserId())
	if err != nil {
		return nil, err
	}
	out := &heraldv1.GetSettingsResponse{Settings: protoconv.SettingsProto(st), Etag: version.Etag()}
	for _, c := range cats {
		out.Categories = append(out.Categories, protoconv.CategoryProto(c))
	}
	return out, nil
}

// UpdateSettings implements ContactsService.UpdateSettings.
func (s *Server) UpdateSettings(ctx context.Context, req *heraldv1.UpdateSettingsRequest) (*heraldv1.UpdateSettingsResponse, error) {
	if err := allow(ctx, appkey.ContactsWrite); err != nil {
		return nil, err
	}
	// Counted before the conversion, which would copy every entry.
	var v errs.Violations
	if !v.Count("settings.categories", len(req.GetSettings().GetCategories()), preference.MaxCategories) {
		return nil, v.Err()
	}
	st, err := protoconv.SettingsDomain(req.GetSettings())
	if err != nil {
		return nil, err
	}
	ifVersion, err := contacts.ParseEtag("etag", req.GetEtag())
	if err != nil {
		return nil, err
	}
	version, err := s.Service.UpdateSettings(ctx, req.GetUserId(), st, ifVersion)
	if err != nil {
		return nil, err
	}
	return &heraldv1.UpdateSettingsResponse{Settings: protoconv.SettingsProto(st), Etag: version.Etag()}, nil
}

// ResolveRecipients implements ContactsService.ResolveRecipients.
func (s *Server) ResolveRecipients(ctx context.Context, req *heraldv1.ResolveRecipientsRequest) (*heraldv1.ResolveRecipientsResponse, error) {
	if err := allow(ctx, appkey.ContactsRead); err != nil {
		return nil, err
	}
	var targets []contacts.Target
	var v errs.Violations
	for i, t := range req.GetTargets() {
		ch, ok := protoconv.ChannelDomain[t.GetChannel()]
		if !ok {
			v.Add(fmt.Sprintf("targets[%d].channel", i), "is not a channel")
		}
		targets = append(targets, contacts.Target{Channel: ch, Address: t.GetAddress()})
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	found, err := s.Service.Resolve(ctx, req.GetUserIds(), targets)
	if err != nil {
		return nil, err
	}
	out := &heraldv1.ResolveRecipientsResponse{}
	for _, r := range found.Users {
		ru := &heraldv1.ResolvedUser{User: userProto(r.User)}
		if r.Settings != nil {
			ru.Settings = protoconv.SettingsProto(r.Settings)
		}
		for _, d := range r.Devices {
			ru.Devices = append(ru.Devices, deviceProto(d))
		}
		out.Users = append(out.Users, ru)
	}
	for _, sup := range found.Suppressions {
		out.Suppressions = append(out.Suppressions, &heraldv1.Suppression{
			Channel: protoconv.ChannelProto[sup.Channel], Address: sup.Address, Category: sup.Category,
			Reason: sup.Reason, Invalid: sup.Invalid,
		})
	}
	return out, nil
}

// ListChanges implements ContactsService.ListChanges.
func (s *Server) ListChanges(ctx context.Context, req *heraldv1.ListChangesRequest) (*heraldv1.ListChangesResponse, error) {
	if err := allow(ctx, appkey.ContactsRead); err != nil {
		return nil, err
	}
	from, ok := parseChangesToken(req.GetPageToken())
	if !ok {
		return nil, errs.Field("page_token", "is not a page token that ListChanges gave")
	}
	page, err := s.Service.ListChanges(ctx, req.GetHorizon(), from)
	if err != nil {
		return nil, err
	}
	return &heraldv1.ListChangesResponse{Keys: page.Keys, NextHorizon: page.Next, NextPageToken: changesToken(page.More)}, nil
}

// ListSuppressedAddresses implements ContactsService.ListSuppressedAddresses.
func (s *Server) ListSuppressedAddresses(ctx context.Context, req *heraldv1.ListSuppressedAddressesRequest) (*heraldv1.ListSuppressedAddressesResponse, error) {
	if err := allow(ctx, appkey.ContactsRead); err != nil {
		return nil, err
	}
	after, ok := parseAddressToken(req.GetPageToken())
	if !ok {
		return nil, errs.Field("page_token", "is not a page token that ListSuppressedAddresses gave")
	}
	addrs, more, err := s.Service.ListSuppressedAddresses(ctx, int(req.GetPageSize()), after)
	if err != nil {
		return nil, err
	}
	out := &heraldv1.ListSuppressedAddressesResponse{Addresses: make([]*heraldv1.Target, len(addrs)),
		NextPageToken: addressToken(more)}
	for i, a := range addrs {
		out.Addresses[i] = &heraldv1.Target{Channel: protoconv.ChannelProto[a.Channel], Address: a.Address}
	}
	return out, nil
}

// CreatePreferenceLink implements ContactsService.CreatePreferenceLink.
func (s *Server) CreatePreferenceLink(ctx context.Context, req *heraldv1.CreatePreferenceLinkRequest) (*heraldv1.CreatePreferenceLinkResponse, error) {
	if err := allow(ctx, appkey.ContactsWrite); err != nil {
		return nil, err
	}
	if s.Links == nil {
		return nil, errs.E(errs.FailedPrecondition, "preference links need --public-url and --link-keys on the contacts service")
	}
	ttl := 7 * 24 * time.Hour
	if req.Ttl != nil {
		if err := req.Ttl.CheckValid(); err != nil || req.Ttl.AsDuration() <= 0 || req.Ttl.AsDuration() > 30*24*time.Hour {
			return nil, errs.Field("ttl", "must be between 1s and 30 days")
		}
		ttl = req.Ttl.AsDuration()
	}
	if _, err := s.Service.GetUser(ctx, req.GetUserId()); err != nil {
		return nil, err
	}
	url, expires, err := s.Links.PreferenceLink(req.GetUserId(), ttl)
	if err != nil {
		return nil, err
	}
	return &heraldv1.CreatePreferenceLinkResponse{Url: url, ExpireTime: timestamppb.New(expires)}, nil
}

func userProto(u *contacts.User) *heraldv1.User {
	return &heraldv1.User{
		UserId: u.ID, Email: u.Email, Phone: u.Phone, Locale: u.Locale, Timezone: u.Timezone,
		CreateTime: timestamppb.New(u.CreatedAt), UpdateTime: timestamppb.New(u.UpdatedAt),
	}
}

func deviceProto(d contacts.Device) *heraldv1.Device {
	out := &heraldv1.Device{
		UserId: d.UserID, Platform: protoconv.PlatformProto[d.Platform], Token: d.Token, App: d.App,
		Active: d.Active, DeactivatedReason: d.DeactivatedReason,
	}
	if !d.CreatedAt.IsZero() {
		out.CreateTime, out.UpdateTime = timestamppb.New(d.CreatedAt), timestamppb.New(d.UpdatedAt)
	}
	return out
}
