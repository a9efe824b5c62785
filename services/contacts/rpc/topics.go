package rpc

import (
	"context"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/errs"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/contacts"
)

// BatchUpsertUsers implements ContactsService.BatchUpsertUsers.
func (s *Server) BatchUpsertUsers(ctx context.Context, req *heraldv1.BatchUpsertUsersRequest) (*heraldv1.BatchUpsertUsersResponse, error) {
	if err := allow(ctx, appkey.ContactsWrite); err != nil {
		return nil, err
	}
	// Counted before the conversion, which would copy every entry.
	var v errs.Violations
	if !v.Count("users", len(req.GetUsers()), 1000) {
		return nil, v.Err()
	}
	us := make([]*contacts.User, len(req.GetUsers()))
	for i, u := range req.GetUsers() {
		us[i] = &contacts.User{ID: u.GetUserId(), Email: u.GetEmail(), Phone: u.GetPhone(), Locale: u.GetLocale(), Timezone: u.GetTimezone()}
	}
	if err := s.Service.BatchUpsertUsers(ctx, us); err != nil {
		return nil, err
	}
	return &heraldv1.BatchUpsertUsersResponse{Upserted: int32(len(us))}, nil
}

// Subscribe implements ContactsService.Subscribe.
func (s *Server) Subscribe(ctx context.Context, req *heraldv1.SubscribeRequest) (*heraldv1.SubscribeResponse, error) {
	if err := allow(ctx, appkey.ContactsWrite); err != nil {
		return nil, err
	}
	added, unknown, err := s.Service.Subscribe(ctx, req.GetTopic(), req.GetUserIds())
	if err != nil {
		return nil, err
	}
	return &heraldv1.SubscribeResponse{Subscribed: int32(added), UnknownUserIds: unknown}, nil
}

// Unsubscribe implements ContactsService.Unsubscribe.
func (s *Server) Unsubscribe(ctx context.Context, req *heraldv1.UnsubscribeRequest) (*heraldv1.UnsubscribeResponse, error) {
	if err := allow(ctx, appkey.ContactsWrite); err != nil {
		return nil, err
	}
	n, err := s.Service.Unsubscribe(ctx, req.GetTopic(), req.GetUserIds())
	if err != nil {
		return nil, err
	}
	return &heraldv1.UnsubscribeResponse{Unsubscribed: int32(n)}, nil
}

// ListSubscribers implements ContactsService.ListSubscribers.
func (s *Server) ListSubscribers(ctx context.Context, req *heraldv1.ListSubscribersRequest) (*heraldv1.ListSubscribersResponse, error) {
	if err := allow(ctx, appkey.ContactsRead); err != nil {
		return nil, err
	}
	after, ok := parseSubscribersToken(req.GetPageToken(), req.GetTopic())
	if !ok {
		return nil, errs.Field("page_token", "is not a page token that ListSubscribers gave for this topic")
	}
	ids, last, err := s.Service.ListSubscribers(ctx, req.GetTopic(), int(req.GetPageSize()), after)
	if err != nil {
		return nil, err
	}
	return &heraldv1.ListSubscribersResponse{UserIds: ids, NextPageToken: subscribersToken(req.GetTopic(), last)}, nil
}

// ListUserTopics implements ContactsService.ListUserTopics.
func (s *Server) ListUserTopics(ctx context.Context, req *heraldv1.ListUserTopicsRequest) (*heraldv1.ListUserTopicsResponse, error) {
	if err := allow(ctx, appkey.ContactsRead); err != nil {
		return nil, err
	}
	topics, err := s.Service.ListUserTopics(ctx, req.GetUserId())
	if err != nil {
		return nil, err
	}
	return &heraldv1.ListUserTopicsResponse{Topics: topics}, nil
}
