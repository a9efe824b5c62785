package notifier

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"regexp"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/preference"
)

var appName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)

// Limits on what names apps and keys.
const (
	maxAppName = 64
	maxKeyID   = 64 // key ids are 16 characters; a longer one names no key
)

// MaxActiveKeys is how many keys an app may hold at once: two, so that a key can be rotated
// (issue the new one, deploy it, revoke the old) without a moment without a working key.
const MaxActiveKeys = 2

// Apps keeps the calling apps and their keys, for admin apps. Each replica authenticates calls
// from the same tables (internal/appkey), so what Apps changes applies everywhere.
type Apps struct {
	Store AppStore
	Log   *slog.Logger
}

// RequireAdmin returns nil for an admin app, and otherwise the PermissionDenied error that says
// only admin apps may do what: apps, keys, categories, dead letters and statistics are theirs
// alone.
func RequireAdmin(caller appkey.Caller, what string) error {
	if !caller.Admin {
		return errs.E(errs.PermissionDenied, "only admin apps may %s", what)
	}
	return nil
}

// checkScopes validates an app's scopes and rates.
func checkScopes(a *App) error {
	var v errs.Violations
	if v.Count("allowed_categories", len(a.AllowedCategories), preference.MaxCategories) {
		for i, c := range a.AllowedCategories {
			if !categoryPattern.MatchString(c) {
				v.Add(fmt.Sprintf("allowed_categories[%d]", i), "is not a category name")
			}
		}
	}
	if v.Count("allowed_channels", len(a.AllowedChannels), len(delivery.Channels)) {
		for i, ch := range a.AllowedChannels {
			if _, err := delivery.ParseChannel(string(ch)); err != nil {
				v.Add(fmt.Sprintf("allowed_channels[%d]", i), "is not a channel")
			}
		}
	}
	if a.RatePerSecond < 0 || math.IsNaN(a.RatePerSecond) || math.IsInf(a.RatePerSecond, 0) {
		v.Add("requests_per_second", "must be zero (the default) or positive")
	}
	if a.Burst < 0 {
		v.Add("burst", "must be zero (the default) or positive")
	}
	if a.Contacts > appkey.ContactsWrite {
		v.Add("contacts_access", "is not a contacts access level (none, read or write)")
	}
	slices.Sort(a.AllowedCategories)
	a.AllowedCategories = slices.Compact(a.AllowedCategories)
	slices.Sort(a.AllowedChannels)
	a.AllowedChannels = slices.Compact(a.AllowedChannels)
	return v.Err()
}

// CreateApp registers a calling app and issues its first key, returned once.
// Errors: PermissionDenied (caller is not an admin app), Invalid, Conflict (name taken).
func (s *Apps) CreateApp(ctx context.Context, caller appkey.Caller, a *App) (appkey.Key, error) {
	if err := RequireAdmin(caller, "create apps"); err != nil {
		return appkey.Key{}, err
	}
	var v errs.Violations
	if v.Bytes("name", a.Name, maxAppName) && !appName.MatchString(a.Name) {
		v.Add("name", "must be 1-64 lower-case letters, digits or '-'")
	}
	if err := v.Err(); err != nil {
		return appkey.Key{}, err
	}
	if err := checkScopes(a); err != nil {
		return appkey.Key{}, err
	}
	a.ID, a.CreatedAt = mustV7(), time.Now()
	if err := s.Store.CreateApp(ctx, a); err != nil {
		return appkey.Key{}, err
	}
	return s.issue(ctx, a.ID)
}

// UpdateApp replaces an app's scopes and rates; every replica applies them from its next call.
// Errors: PermissionDenied, Invalid, NotFound.
func (s *Apps) UpdateApp(ctx context.Context, caller appkey.Caller, a *App) error {
	if err := RequireAdmin(caller, "change apps"); err != nil {
		return err
	}
	if err := checkScopes(a); err != nil {
		return err
	}
	return s.Store.UpdateApp(ctx, a)
}

// ListApps lists every app. Errors: PermissionDenied.
func (s *Apps) ListApps(ctx context.Context, caller appkey.Caller) ([]App, error) {
	if err := RequireAdmin(caller, "list apps"); err != nil {
		return nil, err
	}
	return s.Store.Apps(ctx)
}

// IssueKey issues a new key for an app, returned once.
// Errors: PermissionDenied, NotFound, FailedPrecondition (two active keys already).
func (s *Apps) IssueKey(ctx context.Context, caller appkey.Caller, appID uuid.UUID) (appkey.Key, error) {
	if err := RequireAdmin(caller, "issue keys"); err != nil {
		return appkey.Key{}, err
	}
	return s.issue(ctx, appID)
}

func (s *Apps) issue(ctx context.Context, appID uuid.UUID) (appkey.Key, error) {
	k := appkey.New()
	if err := s.Store.AddKey(ctx, appID, k.ID, k.Hash(), MaxActiveKeys); err != nil {
		return appkey.Key{}, err
	}
	s.Log.Info("issued app key", "app_id", appID, "key_id", k.ID)
	return k, nil
}

// RevokeKey revokes a key; every replica refuses it from its next call.
// Errors: PermissionDenied, NotFound.
func (s *Apps) RevokeKey(ctx context.Context, caller appkey.Caller, keyID string) (KeyInfo, error) {
	if err := RequireAdmin(caller, "revoke keys"); err != nil {
		return KeyInfo{}, err
	}
	var v errs.Violations
	if keyID == "" {
		v.Add("key_id", "is required")
	}
	checkLen(&v, "key_id", keyID, maxKeyID)
	if err := v.Err(); err != nil {
		return KeyInfo{}, err
	}
	k, err := s.Store.RevokeKey(ctx, keyID, time.Now())
	if err == nil {
		s.Log.Info("revoked app key", "app_id", k.AppID, "key_id", k.ID, "by", caller.AppName)
	}
	return k, err
}

// ListKeys lists an app's keys without their secrets. Errors: PermissionDenied, NotFound.
func (s *Apps) ListKeys(ctx context.Context, caller appkey.Caller, appID uuid.UUID) ([]KeyInfo, error) {
	if err := RequireAdmin(caller, "list keys"); err != nil {
		return nil, err
	}
	return s.Store.Keys(ctx, appID)
}
