package rpc

import (
	"context"
	"math"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/inbox"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/notifier"
)

// InboxServer implements InboxService.
type InboxServer struct {
	heraldv1.UnimplementedInboxServiceServer
	Inbox  *notifier.Inbox
	Tokens *notifier.UserTokens
}

// inboxPrefix is the method prefix of InboxService.
const inboxPrefix = "/herald.v1.InboxService/"

type userKey struct{}

// AuthInterceptor authenticates every call: InboxService calls that carry a user token are
// the token's user's (its user in the context); every other call, and InboxService calls
// with an app key, go to appKeys, the app key interceptor.
func AuthInterceptor(appKeys grpc.UnaryServerInterceptor, tokens *notifier.UserTokens) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if strings.HasPrefix(info.FullMethod, inboxPrefix) {
			if tok := appkey.Token(ctx); tok != "" && !appkey.LooksLikeKey(tok) {
				user, _, err := tokens.Verify(tok)
				if err != nil {
					return nil, errs.Status(err).Err()
				}
				return h(context.WithValue(ctx, userKey{}, user), req)
			}
		}
		return appKeys(ctx, req, info, h)
	}
}

func inboxCaller(ctx context.Context) (notifier.InboxCaller, error) {
	if u, ok := ctx.Value(userKey{}).(string); ok {
		return notifier.InboxCaller{User: u}, nil
	}
	c, err := caller(ctx)
	if err != nil {
		return notifier.InboxCaller{}, err
	}
	return notifier.InboxCaller{App: &c}, nil
}

var readFilters = map[heraldv1.ReadFilter]inbox.ReadFilter{
	heraldv1.ReadFilter_READ_FILTER_UNSPECIFIED: inbox.AnyRead,
	heraldv1.ReadFilter_READ_FILTER_UNREAD:      inbox.Unread,
	heraldv1.ReadFilter_READ_FILTER_READ:        inbox.Read,
}

// ListInboxMessages implements InboxService.ListInboxMessages.
func (s *InboxServer) ListInboxMessages(ctx context.Context, req *heraldv1.ListInboxMessagesRequest) (*heraldv1.ListInboxMessagesResponse, error) {
	c, err := inboxCaller(ctx)
	if err != nil {
		return nil, err
	}
	read, ok := readFilters[req.GetRead()]
	if !ok {
		return nil, errs.Field("read", "must be READ_FILTER_UNSPECIFIED, READ_FILTER_UNREAD or READ_FILTER_READ")
	}
	ms, next, err := s.Inbox.List(ctx, c, notifier.InboxList{UserID: req.GetUserId(), PageSize: int(req.GetPageSize()),
		Cursor: req.GetPageToken(), Read: read, Category: req.GetCategory(), IncludeArchived: req.GetIncludeArchived()})
	if err != nil {
		return nil, err
	}
	out := &heraldv1.ListInboxMessagesResponse{NextPageToken: next, Messages: make([]*heraldv1.InboxMessage, len(ms))}
	for i := range ms {
		out.Messages[i] = InboxMessageProto(&ms[i])
	}
	return out, nil
}

// InboxMessageProto is m as the API shows it (also on the live feed).
func InboxMessageProto(m *inbox.Message) *heraldv1.InboxMessage {
	out := &heraldv1.InboxMessage{Id: m.ID.String(), NotificationId: m.NotificationID.String(), Category: m.Category,
		Title: m.Title, Body: m.Body, CreateTime: timestamppb.New(m.CreatedAt)}
	if m.Data != nil {
		if d, err := structpb.NewStruct(m.Data); err == nil {
			out.Data = d
		}
	}
	if m.ReadAt != nil {
		out.ReadTime = timestamppb.New(*m.ReadAt)
	}
	if m.ArchivedAt != nil {
		out.ArchiveTime = timestamppb.New(*m.ArchivedAt)
	}
	return out
}

// GetUnreadCount implements InboxService.GetUnreadCount.
func (s *InboxServer) GetUnreadCount(ctx context.Context, req *heraldv1.GetUnreadCountRequest) (*heraldv1.GetUnreadCountResponse, error) {
	c, err := inboxCaller(ctx)
	if err != nil {
		return nil, err
	}
	n, err := s.Inbox.UnreadCount(ctx, c, req.GetUserId())
	if err != nil {
		return nil, err
	}
	return &heraldv1.GetUnreadCountResponse{Unread: count32(n)}, nil
}

// MarkRead implements InboxService.MarkRead.
func (s *InboxServer) MarkRead(ctx context.Context, req *heraldv1.MarkReadRequest) (*heraldv1.MarkReadResponse, error) {
	c, err := inboxCaller(ctx)
	if err != nil {
		return nil, err
	}
	ch, err := s.Inbox.MarkRead(ctx, c, req.GetUserId(), req.GetIds())
	if err != nil {
		return nil, err
	}
	return &heraldv1.MarkReadResponse{Marked: count32(int64(len(ch.Marked))), Unread: count32(ch.Unread)}, nil
}

// MarkAllRead implements InboxService.MarkAllRead.
func (s *InboxServer) MarkAllRead(ctx context.Context, req *heraldv1.MarkAllReadRequest) (*heraldv1.MarkAllReadResponse, error) {
	c, err := inboxCaller(ctx)
	if err != nil {
		return nil, err
	}
	ch, err := s.Inbox.MarkAllRead(ctx, c, req.GetUserId(), req.GetCategory())
	if err != nil {
		return nil, err
	}
	return &heraldv1.MarkAllReadResponse{Marked: count32(int64(len(ch.Marked))), Unread: count32(ch.Unread)}, nil
}

// ArchiveMessages implements InboxService.ArchiveMessages.
func (s *InboxServer) ArchiveMessages(ctx context.Context, req *heraldv1.ArchiveMessagesRequest) (*heraldv1.ArchiveMessagesResponse, error) {
	c, err := inboxCaller(ctx)
	if err != nil {
		return nil, err
	}
	ch, err := s.Inbox.Archive(ctx, c, req.GetUserId(), req.GetIds())
	if err != nil {
		return nil, err
	}
	return &heraldv1.ArchiveMessagesResponse{Archived: count32(int64(len(ch.Marked))), Unread: count32(ch.Unread)}, nil
}

// count32 fits a count to the API's int32, which JSON carries as a number a browser can add to
// (an int64 would be a string). No inbox holds more than 2^31 messages within its retention.
func count32(n int64) int32 {
	return int32(min(n, math.MaxInt32))
}

// CreateUserToken implements InboxService.CreateUserToken: app keys only.
func (s *InboxServer) CreateUserToken(ctx context.Context, req *heraldv1.CreateUserTokenRequest) (*heraldv1.CreateUserTokenResponse, error) {
	c, err := inboxCaller(ctx)
	if err != nil {
		return nil, err
	}
	if c.App == nil {
		return nil, errs.E(errs.PermissionDenied, "a user token cannot create tokens: call with the app key, from the app's backend")
	}
	if req.Ttl != nil && req.Ttl.CheckValid() != nil {
		return nil, errs.Field("ttl", "is not a valid duration")
	}
	tok, exp, err := s.Tokens.Create(*c.App, req.GetUserId(), req.GetTtl().AsDuration())
	if err != nil {
		return nil, err
	}
	return &heraldv1.CreateUserTokenResponse{Token: tok, ExpireTime: timestamppb.New(exp)}, nil
}
