// Package rpc serves the notifier's gRPC API (NotificationService, TemplateService,
// AdminService): it turns protos into domain calls and domain results into protos, and nothing
// else. Errors become status codes in the errs interceptor.
package rpc

import (
	"context"
	"crypto/sha256"
	"fmt"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/protoconv"
	"github.com/heraldhq/herald/internal/server"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/notifier"
	"github.com/heraldhq/herald/services/notifier/ops"
)

// Server implements the notifier's gRPC services on the notifier's parts. A Server that serves
// only some of the services needs only their parts.
type Server struct {
	heraldv1.UnimplementedNotificationServiceServer
	heraldv1.UnimplementedTemplateServiceServer
	heraldv1.UnimplementedAdminServiceServer

	// Sender serves NotificationService, but for TrackEvent and SendToTopic.
	Sender *notifier.Sender
	// Topics serves SendToTopic, adds topic sends to GetNotification and stops them in
	// CancelNotification; nil: no topics.
	Topics *notifier.Topics
	// Templates serves TemplateService.
	Templates *notifier.Templates
	// Categories, Apps and Operations serve AdminService; Operations serves TrackEvent too.
	Categories *notifier.Categories
	Apps       *notifier.Apps
	Operations *notifier.Operations
	// QueueStats answers GetQueueStats; nil when queue statistics are not collected.
	QueueStats ops.Source
}

func caller(ctx context.Context) (appkey.Caller, error) {
	c, ok := appkey.CallerFrom(ctx)
	if !ok { // the auth interceptor guards every method; reaching here is a wiring bug
		return appkey.Caller{}, errs.E(errs.Unauthenticated, "missing app key")
	}
	return c, nil
}

// admin returns the caller of an AdminService method that only admin apps may call (what says
// what it does), or the PermissionDenied answer. Those handlers call it before they look at the
// request, so any other app gets the same answer whatever it sends, valid or not: it learns
// nothing from validation. The domain checks again, for its other callers.
func admin(ctx context.Context, what string) (appkey.Caller, error) {
	c, err := caller(ctx)
	if err != nil {
		return c, err
	}
	return c, notifier.RequireAdmin(c, what)
}

// Send implements NotificationService.Send.
func (s *Server) Send(ctx context.Context, req *heraldv1.SendRequest) (*heraldv1.SendResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if key, err := metadataKey(ctx, req.GetIdempotencyKey()); err != nil {
		return nil, err
	} else if key != req.GetIdempotencyKey() {
		req = proto.CloneOf(req)
		req.IdempotencyKey = key
	}
	dreq, err := sendRequest(req)
	if err != nil {
		return nil, err
	}
	res, err := s.Sender.Send(ctx, c, dreq)
	if err != nil {
		return nil, err
	}
	return sendResponse(res), nil
}

// metadataKey returns the idempotency key of a call whose request field holds key: the call's
// idempotency-key metadata (the HTTP API's Idempotency-Key header) when it has one, else key.
// A call that gives two different keys, or several in metadata, is refused: which one was meant
// cannot be told, and guessing could send twice.
func metadataKey(ctx context.Context, key string) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(server.IdempotencyKeyMetadata)
	switch {
	case len(vals) == 0:
		return key, nil
	case len(vals) > 1:
		return "", errs.Field("idempotency_key", "the Idempotency-Key header is given more than once")
	case vals[0] == "":
		return "", errs.Field("idempotency_key", "the Idempotency-Key header is empty")
	case key != "" && key != vals[0]:
		return "", errs.Field("idempotency_key", "differs from the Idempotency-Key header; give one of them")
	}
	return vals[0], nil
}

func sendResponse(res *notifier.SendResult) *heraldv1.SendResponse {
	out := &heraldv1.SendResponse{NotificationId: res.Notification.ID.String(), Duplicate: res.Duplicate}
	for _, d := range res.Notification.Deliveries {
		out.Deliveries = append(out.Deliveries, &heraldv1.Delivery{
			DeliveryId: d.ID.String(),
			Channel:    protoconv.ChannelProto[d.Channel],
			State:      protoconv.StateProto[d.State],
			Reason:     d.Reason,
			Step:       int32(d.Step),
			// An item of a digest names it at once: GetNotification of it shows its delivery.
			DigestNotificationId: optID(d.DigestID),
		})
	}
	return out
}

// maxData bounds a request's template data, encoded: every delivery stores it and templates
// range over it.
const maxData = 64 << 10

// checkData records a violation when data encodes to more than maxData bytes.
func checkData(v *errs.Violations, field string, data *structpb.Struct) bool {
	if data == nil {
		return true
	}
	if n := proto.Size(data); n > maxData {
		v.Add(field, fmt.Sprintf("at most %d bytes encoded, got %d", maxData, n))
		return false
	}
	return true
}

func sendRequest(req *heraldv1.SendRequest) (*notifier.SendRequest, error) {
	// Deterministic marshalling makes equal requests hash equally, for idempotent replays.
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(req)
	if err != nil {
		return nil, errs.Field("request", "cannot be encoded")
	}
	hash := sha256.Sum256(raw)
	out := &notifier.SendRequest{
		IdempotencyKey: req.GetIdempotencyKey(),
		RequestHash:    hash[:],
		Category:       req.GetCategory(),
		Priority:       protoconv.PriorityDomain[req.GetPriority()],
	}
	var v errs.Violations
	switch r := req.GetRecipient().GetKind().(type) {
	case *heraldv1.Recipient_UserId:
		out.UserID = r.UserId
		if out.UserID == "" {
			v.Add("recipient.user_id", "is empty")
		}
	case *heraldv1.Recipient_Address:
		a := r.Address
		out.Address = &notifier.Address{Email: a.GetEmail(), Phone: a.GetPhone(),
			IOSTokens: a.GetIosTokens(), AndroidTokens: a.GetAndroidTokens()}
	}
	if v.Count("channels", len(req.GetChannels()), len(protoconv.ChannelDomain)) {
		for i, ch := range req.GetChannels() {
			d, ok := protoconv.ChannelDomain[ch]
			if !ok {
				v.Add(fmt.Sprintf("channels[%d]", i), protoconv.MustBeChannel)
				continue
			}
			out.Channels = append(out.Channels, d)
		}
	}
	out.Fallback = protoconv.FallbackDomain(&v, "fallback", req.GetFallback())
	out.Digest = protoconv.DigestDomain(&v, "digest", req.GetDigest())
	switch m := req.GetMessage().(type) {
	case *heraldv1.SendRequest_Template:
		out.Template = &notifier.TemplateRef{Name: m.Template.GetName(), Version: int(m.Template.GetVersion()),
			Locale: m.Template.GetLocale()}
		if m.Template.Version != nil && m.Template.GetVersion() <= 0 {
			v.Add("template.version", "must be positive")
		}
	case *heraldv1.SendRequest_Content:
		c := m.Content
		out.Content = &notifier.Content{Title: c.GetTitle(), Body: c.GetBody(), Subject: c.GetSubject(), HTML: c.GetHtml()}
	}
	if _, ok := protoconv.PriorityDomain[req.GetPriority()]; !ok {
		v.Add("priority", "is not a known priority")
	}
	if req.Data != nil && checkData(&v, "data", req.Data) {
		out.Data = req.Data.AsMap()
	}
	if req.SendAt != nil {
		if err := req.SendAt.CheckValid(); err != nil {
			v.Add("send_at", "is not a valid timestamp")
		}
		out.SendAt = req.SendAt.AsTime()
	}
	if req.Ttl != nil {
		if err := req.Ttl.CheckValid(); err != nil {
			v.Add("ttl", "is not a valid duration")
		}
		out.TTL = req.Ttl.AsDuration()
	}
	return out, v.Err()
}

// GetNotification implements NotificationService.GetNotification.
func (s *Server) GetNotification(ctx context.Context, req *heraldv1.GetNotificationRequest) (*heraldv1.GetNotificationResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	id, err := uuid.Parse(req.GetNotificationId())
	if err != nil {
		return nil, errs.Field("notification_id", "must be a notification id (a UUID)")
	}
	get := s.Sender.GetNotification
	if s.Topics != nil {
		get = s.Topics.GetNotification
	}
	n, err := get(ctx, c, id)
	if err != nil {
		return nil, err
	}
	out := notificationProto(n)
	return &heraldv1.GetNotificationResponse{Notification: out}, nil
}

func notificationProto(n *notifier.Notification) *heraldv1.Notification {
	out := &heraldv1.Notification{
		NotificationId: n.ID.String(),
		IdempotencyKey: n.IdempotencyKey,
		Category:       n.Category,
		UserId:         n.UserID,
		Priority:       protoconv.PriorityProto[n.Priority],
		CreateTime:     timestamppb.New(n.CreatedAt),
		SendTime:       timestamppb.New(n.SendAt),
		ExpireTime:     timestamppb.New(n.ExpiresAt),
	}
	if t := n.Template; t != nil {
		v := int32(t.Version)
		out.Template = &heraldv1.TemplateRef{Name: t.Name, Version: &v}
		if t.Locale != "" {
			out.Template.Locale = &t.Locale
		}
	}
	for _, d := range n.Deliveries {
		out.Deliveries = append(out.Deliveries, deliveryProto(d))
	}
	out.Topic = topicProto(n.Topic) // topics.go
	return out
}

func deliveryProto(d *notifier.Delivery) *heraldv1.Delivery {
	return &heraldv1.Delivery{
		DeliveryId:        d.ID.String(),
		Channel:           protoconv.ChannelProto[d.Channel],
		State:             protoconv.StateProto[d.State],
		Reason:            d.Reason,
		Attempts:          int32(d.Attempts),
		LastError:         d.LastError,
		Provider:          d.Provider,
		ProviderMessageId: d.ProviderMessageID,
		CreateTime:        timestamppb.New(d.CreatedAt),
		UpdateTime:        timestamppb.New(d.UpdatedAt),
		DigestDeliveryId:  optID(d.DigestDeliveryID),
		// A digest's id is the id of the notification that holds its delivery.
		DigestNotificationId: optID(d.DigestID),
		SentTime:             optTime(d.SentAt),
		Step:                 int32(d.Step),
	}
}

func optTime(t *time.Time) *timestamppb.Timestamp {
	if t == nil {
		return nil
	}
	return timestamppb.New(*t)
}

// PutCategory implements AdminService.PutCategory.
func (s *Server) PutCategory(ctx context.Context, req *heraldv1.PutCategoryRequest) (*heraldv1.PutCategoryResponse, error) {
	c, err := admin(ctx, "change categories")
	if err != nil {
		return nil, err
	}
	in := req.GetCategory()
	if in == nil {
		return nil, errs.Field("category", "is required")
	}
	cat, err := protoconv.CategoryDomain(in)
	if err != nil {
		return nil, err
	}
	if err := s.Categories.PutCategory(ctx, c, cat); err != nil {
		return nil, err
	}
	return &heraldv1.PutCategoryResponse{Category: protoconv.CategoryProto(cat)}, nil
}

// ListCategories implements AdminService.ListCategories.
func (s *Server) ListCategories(ctx context.Context, _ *heraldv1.ListCategoriesRequest) (*heraldv1.ListCategoriesResponse, error) {
	cats, err := s.Categories.ListCategories(ctx)
	if err != nil {
		return nil, err
	}
	out := &heraldv1.ListCategoriesResponse{}
	for _, c := range cats {
		out.Categories = append(out.Categories, protoconv.CategoryProto(c))
	}
	return out, nil
}

func deadLetterFilter(ids []string, ch heraldv1.Channel, reason string) (notifier.DeadLetterFilter, error) {
	var v errs.Violations
	f := notifier.DeadLetterFilter{Reason: reason}
	if !v.Count("delivery_ids", len(ids), notifier.MaxRedrive) {
		return f, v.Err()
	}
	for i, s := range ids {
		id, err := uuid.Parse(s)
		if err != nil {
			v.Add(fmt.Sprintf("delivery_ids[%d]", i), "must be a delivery id (a UUID)")
			continue
		}
		f.IDs = append(f.IDs, id)
	}
	if ch != heraldv1.Channel_CHANNEL_UNSPECIFIED {
		d, ok := protoconv.ChannelDomain[ch]
		if !ok {
			v.Add("channel", "is not a channel")
		}
		f.Channel = d
	}
	return f, v.Err()
}

// ListDeadLetters implements AdminService.ListDeadLetters.
func (s *Server) ListDeadLetters(ctx context.Context, req *heraldv1.ListDeadLettersRequest) (*heraldv1.ListDeadLettersResponse, error) {
	c, err := admin(ctx, "list dead letters")
	if err != nil {
		return nil, err
	}
	f, err := deadLetterFilter(nil, req.GetChannel(), req.GetReason())
	if err != nil {
		return nil, err
	}
	list, next, err := s.Operations.ListDeadLetters(ctx, c, f, int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	out := &heraldv1.ListDeadLettersResponse{NextPageToken: next}
	for _, d := range list {
		out.DeadLetters = append(out.DeadLetters, &heraldv1.DeadLetter{
			Delivery:       deliveryProto(&d),
			NotificationId: d.NotificationID.String(),
			Category:       d.Category,
		})
	}
	return out, nil
}

// RedriveDeadLetters implements AdminService.RedriveDeadLetters.
func (s *Server) RedriveDeadLetters(ctx context.Context, req *heraldv1.RedriveDeadLettersRequest) (*heraldv1.RedriveDeadLettersResponse, error) {
	c, err := admin(ctx, "re-drive dead letters")
	if err != nil {
		return nil, err
	}
	f, err := deadLetterFilter(req.GetDeliveryIds(), req.GetChannel(), req.GetReason())
	if err != nil {
		return nil, err
	}
	n, err := s.Operations.RedriveDeadLetters(ctx, c, f, req.GetAll())
	if err != nil {
		return nil, err
	}
	return &heraldv1.RedriveDeadLettersResponse{Redriven: int32(n)}, nil
}

// optID is an optional id in the API: "" for none.
func optID(id uuid.UUID) string {
	if id == uuid.Nil {
		return ""
	}
	return id.String()
}
