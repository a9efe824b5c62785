// Package contacts holds Herald's recipients: who they are and how to reach them. The root
// package validates and decides; postgres/ stores users (schema "contacts"), rpc/ serves
// ContactsService, daemon/ wires a running service.
package contacts

import (
	"context"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/heraldhq/herald/internal/address"
	"github.com/heraldhq/herald/internal/errs"
)

// User is a recipient known by an id the calling services chose.
type User struct {
	ID        string
	Email     string
	Phone     string
	Locale    string
	Timezone  string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Store keeps users. The postgres package implements it.
type Store interface {
	// UpsertUser creates or replaces u and returns it as stored.
	UpsertUser(ctx context.Context, u *User) (*User, error)
	// User returns a user, or a NotFound error.
	User(ctx context.Context, id string) (*User, error)
	// DeleteUser erases a user; deleting an unknown user is not an error.
	DeleteUser(ctx context.Context, id string) error
	// Users returns the users that exist among ids.
	Users(ctx context.Context, ids []string) ([]*User, error)
}

// Service is the contacts service.
type Service struct {
	Store Store
}

const (
	maxUserID   = 128
	maxBatchGet = 1000
)

// UpsertUser validates u, normalises its addresses and stores it.
// Errors: Invalid (with field violations).
func (s *Service) UpsertUser(ctx context.Context, u *User) (*User, error) {
	var v errs.Violations
	checkID(&v, "user.user_id", u.ID)
	if u.Email != "" {
		e, err := address.Email(u.Email)
		if err != nil {
			v.Add("user.email", err.Error())
		}
		u.Email = e
	}
	if u.Phone != "" {
		p, err := address.Phone(u.Phone)
		if err != nil {
			v.Add("user.phone", err.Error())
		}
		u.Phone = p
	}
	if u.Timezone != "" {
		if _, err := time.LoadLocation(u.Timezone); err != nil || len(u.Timezone) > 64 {
			v.Add("user.timezone", "must be an IANA time zone such as Europe/Lisbon")
		}
	}
	if len(u.Locale) > 35 {
		v.Add("user.locale", "must be a BCP 47 tag such as pt-BR")
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	return s.Store.UpsertUser(ctx, u)
}

// GetUser returns a user. Errors: Invalid, NotFound.
func (s *Service) GetUser(ctx context.Context, id string) (*User, error) {
	var v errs.Violations
	checkID(&v, "user_id", id)
	if err := v.Err(); err != nil {
		return nil, err
	}
	return s.Store.User(ctx, id)
}

// DeleteUser erases a user's contact data. Errors: Invalid.
func (s *Service) DeleteUser(ctx context.Context, id string) error {
	var v errs.Violations
	checkID(&v, "user_id", id)
	if err := v.Err(); err != nil {
		return err
	}
	return s.Store.DeleteUser(ctx, id)
}

// BatchGetUsers returns the users that exist among ids. Errors: Invalid.
func (s *Service) BatchGetUsers(ctx context.Context, ids []string) ([]*User, error) {
	var v errs.Violations
	if len(ids) > maxBatchGet {
		v.Add("user_ids", fmt.Sprintf("must hold at most %d ids", maxBatchGet))
	}
	for i, id := range ids {
		checkID(&v, fmt.Sprintf("user_ids[%d]", i), id)
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	return s.Store.Users(ctx, ids)
}

func checkID(v *errs.Violations, field, id string) {
	if id == "" || len(id) > maxUserID || !utf8.ValidString(id) {
		v.Add(field, fmt.Sprintf("must be 1-%d bytes of UTF-8", maxUserID))
	}
}
