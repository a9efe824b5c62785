// Package contacts re-checks deliveries against what the contacts service knows just before
// they are sent, so that an opt-out, a suppression or a removed device recorded after a
// notification was accepted still stops it. It reads a cache kept exact by the contacts
// service's change feed (internal/contactscache), calling the service only for what the cache
// cannot answer.
package contacts

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/heraldhq/herald/internal/contactscache"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/preference"
	"github.com/heraldhq/herald/services/workers"
)

// Gate implements workers.Gate with a contactscache.Cache: a batch of known users and
// addresses with no suppression is checked without a call.
type Gate struct {
	cache *contactscache.Cache
}

var _ workers.Gate = (*Gate)(nil)

// New returns a Gate on conn, which must carry the workers' app key, of an app with contacts
// read access. Its metrics go to reg (nil: none). Close stops it.
func New(conn grpc.ClientConnInterface, reg prometheus.Registerer) *Gate {
	return &Gate{cache: contactscache.New(conn, contactscache.Options{Metrics: reg})}
}

// Close stops the cache's background work.
func (g *Gate) Close() { g.cache.Close() }

// Reasons a delivery is stopped at send time, beyond the preference package's.
const (
	ReasonUserDeleted = "user_deleted"
	ReasonNoDevice    = "device_unregistered"
)

// Check implements workers.Gate. It sees every change the contacts service acknowledged
// before it was called. It also sets the DeviceApp of each push message whose device registered
// an app, which chooses the credential it goes through.
func (g *Gate) Check(ctx context.Context, msgs []*workers.Message) (map[uuid.UUID]string, error) {
	began := time.Now()
	var ids []string
	targets := make([]contactscache.Target, 0, len(msgs))
	for _, m := range msgs {
		if m.UserID != "" && !slices.Contains(ids, m.UserID) {
			ids = append(ids, m.UserID)
		}
		targets = append(targets, contactscache.Target{Channel: m.Channel, Address: m.To})
	}
	users, sups, err := g.cache.Resolve(ctx, began, ids, targets)
	if err != nil {
		return nil, fmt.Errorf("resolve recipients: %w", err)
	}
	out := map[uuid.UUID]string{}
	for _, m := range msgs {
		cat := m.Rules()
		if reason, blocked := preference.Blocked(sups, cat, m.Channel, m.To); blocked {
			out[m.DeliveryID] = reason
			continue
		}
		if m.UserID == "" {
			continue
		}
		u := users[slices.Index(ids, m.UserID)]
		switch {
		case u == nil:
			out[m.DeliveryID] = ReasonUserDeleted
		case !u.Settings.Allows(cat, m.Channel):
			out[m.DeliveryID] = preference.ReasonOptedOut
		case m.Channel == delivery.IOS && !slices.Contains(u.IOSTokens, m.To),
			m.Channel == delivery.Android && !slices.Contains(u.AndroidTokens, m.To):
			out[m.DeliveryID] = ReasonNoDevice
		case m.Channel == delivery.IOS || m.Channel == delivery.Android:
			m.DeviceApp = u.DeviceApps[m.To]
		}
	}
	return out, nil
}
