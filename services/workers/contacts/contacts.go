// Package contacts re-checks deliveries against the contacts service just before they are sent,
// so that an opt-out, a suppression or a removed device recorded after a notification was
// accepted still stops it.
package contacts

import (
	"context"
	"fmt"
	"slices"

	"github.com/google/uuid"
	"google.golang.org/grpc"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/preference"
	"github.com/heraldhq/herald/internal/protoconv"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/workers"
)

// Gate implements workers.Gate with ContactsService.ResolveRecipients: one call per batch.
type Gate struct {
	client heraldv1.ContactsServiceClient
}

var _ workers.Gate = (*Gate)(nil)

// New returns a Gate on conn, which must carry the workers' app key.
func New(conn grpc.ClientConnInterface) *Gate {
	return &Gate{client: heraldv1.NewContactsServiceClient(conn)}
}

// Reasons a delivery is stopped at send time, beyond the preference package's.
const (
	ReasonUserDeleted = "user_deleted"
	ReasonNoDevice    = "device_unregistered"
)

// chunk keeps each call within the service's limit of 1,000 users and targets.
const chunk = 400

// Check implements workers.Gate.
func (g *Gate) Check(ctx context.Context, msgs []*workers.Message) (map[uuid.UUID]string, error) {
	out := map[uuid.UUID]string{}
	for start := 0; start < len(msgs); start += chunk {
		if err := g.check(ctx, msgs[start:min(start+chunk, len(msgs))], out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (g *Gate) check(ctx context.Context, msgs []*workers.Message, out map[uuid.UUID]string) error {
	req := &heraldv1.ResolveRecipientsRequest{}
	for _, m := range msgs {
		if m.UserID != "" && !slices.Contains(req.UserIds, m.UserID) {
			req.UserIds = append(req.UserIds, m.UserID)
		}
		req.Targets = append(req.Targets, &heraldv1.Target{Channel: protoconv.ChannelProto[m.Channel], Address: m.To})
	}
	res, err := g.client.ResolveRecipients(ctx, req)
	if err != nil {
		return fmt.Errorf("resolve recipients: %w", err)
	}
	type user struct {
		settings *preference.Settings
		tokens   map[string]bool
	}
	users := map[string]user{}
	for _, r := range res.GetUsers() {
		u := user{tokens: map[string]bool{}}
		if r.Settings != nil {
			u.settings, _ = protoconv.SettingsDomain(r.Settings)
		}
		for _, d := range r.GetDevices() {
			u.tokens[d.GetToken()] = true
		}
		users[r.GetUser().GetUserId()] = u
	}
	var sups []preference.Suppression
	for _, s := range res.GetSuppressions() {
		sups = append(sups, preference.Suppression{Channel: protoconv.ChannelDomain[s.GetChannel()],
			Address: s.GetAddress(), Category: s.GetCategory(), Reason: s.GetReason(), Invalid: s.GetInvalid()})
	}
	for _, m := range msgs {
		cat := m.Rules()
		if reason, blocked := preference.Blocked(sups, cat, m.Channel, m.To); blocked {
			out[m.DeliveryID] = reason
			continue
		}
		if m.UserID == "" {
			continue
		}
		u, ok := users[m.UserID]
		switch {
		case !ok:
			out[m.DeliveryID] = ReasonUserDeleted
		case !u.settings.Allows(cat, m.Channel):
			out[m.DeliveryID] = preference.ReasonOptedOut
		case (m.Channel == delivery.IOS || m.Channel == delivery.Android) && !u.tokens[m.To]:
			out[m.DeliveryID] = ReasonNoDevice
		}
	}
	return nil
}
