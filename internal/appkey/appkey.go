// Package appkey authenticates the services that call Herald. A key looks like
// "hk_<key id>_<secret>": the "hk_" prefix lets secret scanners recognise it, the key id finds
// the stored record, and only a SHA-256 hash of the secret is stored. The secret has 256 bits of
// entropy, so a fast hash is enough: there is nothing to brute-force.
package appkey

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/heraldhq/herald/internal/coherent"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/pgdb"
)

const prefix = "hk_"

// LooksLikeKey reports whether token has an app key's form ("hk_" first), as opposed to
// another bearer token (an inbox user token): which check it goes to, not whether it is valid.
func LooksLikeKey(token string) bool { return strings.HasPrefix(token, prefix) }

// Key is a parsed app key.
type Key struct {
	ID     string
	Secret string
}

// String returns the key as callers send it.
func (k Key) String() string { return prefix + k.ID + "_" + k.Secret }

// Hash returns the stored form of the key's secret.
func (k Key) Hash() []byte {
	h := sha256.Sum256([]byte(k.Secret))
	return h[:]
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// New returns a fresh random key.
func New() Key {
	id := make([]byte, 10)
	secret := make([]byte, 32)
	rand.Read(id)
	rand.Read(secret)
	return Key{ID: idEncoding.EncodeToString(id), Secret: base64.RawURLEncoding.EncodeToString(secret)}
}

// Parse splits a key into its id and secret. It returns an error for anything not shaped like a
// key; the error never repeats the input.
func Parse(s string) (Key, error) {
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok {
		return Key{}, errors.New("not a Herald key")
	}
	id, secret, ok := strings.Cut(rest, "_")
	if !ok || len(id) != 16 || len(secret) != 43 {
		return Key{}, errors.New("not a Herald key")
	}
	if _, err := idEncoding.DecodeString(id); err != nil {
		return Key{}, errors.New("not a Herald key")
	}
	if _, err := base64.RawURLEncoding.DecodeString(secret); err != nil {
		return Key{}, errors.New("not a Herald key")
	}
	return Key{ID: id, Secret: secret}, nil
}

// Caller is an authenticated app, with what it may do.
type Caller struct {
	AppID   uuid.UUID
	AppName string
	KeyID   string
	Admin   bool
	// AllowedCategories and AllowedChannels scope what the app may send; empty means all.
	AllowedCategories []string
	AllowedChannels   []delivery.Channel
	// RatePerSecond and Burst are the app's request rate; 0 means the server's default.
	RatePerSecond float64
	Burst         int
	// Contacts is what the app may do with the contacts service's data (admin apps: anything).
	Contacts ContactsAccess
}

// ContactsAccess is what an app may do with the recipients' contact data (users, addresses,
// devices, settings, suppressions). Sending needs none: the notifier looks recipients up with
// its own key. Each level includes the ones below it.
type ContactsAccess uint8

// The levels of ContactsAccess, stored by their String names.
const (
	// ContactsNone is the default: no ContactsService call at all.
	ContactsNone ContactsAccess = iota
	// ContactsRead reads users, devices, settings and suppressions.
	ContactsRead
	// ContactsWrite also changes them, deletes users and issues preference links.
	ContactsWrite
)

var contactsAccessNames = [...]string{ContactsNone: "none", ContactsRead: "read", ContactsWrite: "write"}

// String returns the level's name: "none", "read" or "write".
func (a ContactsAccess) String() string {
	if int(a) < len(contactsAccessNames) {
		return contactsAccessNames[a]
	}
	return fmt.Sprintf("ContactsAccess(%d)", uint8(a))
}

// ParseContactsAccess returns the level named s ("none", "read" or "write"), or an error that
// lists them.
func ParseContactsAccess(s string) (ContactsAccess, error) {
	for a, name := range contactsAccessNames {
		if s == name {
			return ContactsAccess(a), nil
		}
	}
	return 0, errors.New("must be none, read or write")
}

// contactsAccess returns what the caller may do with contact data: an admin app may do
// everything, whatever its own level says; a level this code does not know grants nothing.
func (c Caller) contactsAccess() ContactsAccess {
	switch {
	case c.Admin:
		return ContactsWrite
	case c.Contacts > ContactsWrite:
		return ContactsNone
	}
	return c.Contacts
}

var (
	errNoContactsRead  = errs.E(errs.PermissionDenied, "this app may not read contact data: it needs contacts access read (an admin grants it: heraldctl apps update <app> --contacts read)")
	errNoContactsWrite = errs.E(errs.PermissionDenied, "this app may not change contact data: it needs contacts access write (an admin grants it: heraldctl apps update <app> --contacts write)")
)

// AllowContacts returns nil if the caller may do what need allows, and otherwise a
// PermissionDenied error. The error depends on need alone - never on what the call names - so
// a refusal tells nothing about which users exist; callers check it before they look at the
// request at all.
func (c Caller) AllowContacts(need ContactsAccess) error {
	if c.contactsAccess() >= need {
		return nil
	}
	if need >= ContactsWrite {
		return errNoContactsWrite
	}
	return errNoContactsRead
}

// Record is a stored key.
type Record struct {
	Caller
	SecretHash []byte
	RevokedAt  *time.Time
}

// ErrNoKey is what a Store returns for a key id it does not know.
var ErrNoKey = errors.New("no such key")

// Store finds stored keys and reports which changed.
type Store interface {
	// Key returns the stored record of a key id, or ErrNoKey.
	Key(ctx context.Context, keyID string) (Record, error)
	// Changes reads the feed of changed key ids (see coherent.Feed).
	Changes(ctx context.Context, horizon uint64) ([]string, uint64, error)
}

// Authenticator checks keys against their stored records through a coherent cache: the hot
// path costs no lookup per call, yet a key revoked (or an app's scope changed) on any replica
// is refused by every replica from the next call on.
type Authenticator struct {
	store Store
	cache *coherent.Cache[cached]
}

type cached struct {
	rec   Record
	found bool
}

// NewAuthenticator returns an Authenticator on store, with a poller of store's change feed of
// its own.
func NewAuthenticator(store Store) *Authenticator {
	return NewAuthenticatorWith(store, coherent.NewPoller(store, FeedStale))
}

// NewAuthenticatorWith returns an Authenticator on store whose cache is kept by p, a poller of
// store's change feed that other caches over the same feed share: a call that authenticates and
// then reads them waits for one poll, not one per cache (see coherent.Poller.SyncSince).
func NewAuthenticatorWith(store Store, p *coherent.Poller) *Authenticator {
	return &Authenticator{store: store, cache: coherent.NewCache[cached](p, 10_000)}
}

// FeedStale is how long the key change feed may go unread before a cache over it forgets
// everything; the notifier keeps the feed's rows for longer.
const FeedStale = 30 * time.Minute

var errBadKey = errs.E(errs.Unauthenticated, "invalid or revoked app key")

// Authenticate returns the caller that token (a key) belongs to. Every failure - malformed,
// unknown, wrong secret, revoked - gives the same Unauthenticated error, so an answer never tells
// which keys exist.
func (a *Authenticator) Authenticate(ctx context.Context, token string) (Caller, error) {
	key, err := Parse(token)
	if err != nil {
		return Caller{}, errBadKey
	}
	rec, found, err := a.record(ctx, key.ID)
	if err != nil {
		return Caller{}, errs.Wrap(errs.Unavailable, err, "cannot check the app key now")
	}
	hash := key.Hash()
	if !found {
		// Compare anyway so that unknown and known ids take the same time.
		subtle.ConstantTimeCompare(hash, hash)
		return Caller{}, errBadKey
	}
	if subtle.ConstantTimeCompare(hash, rec.SecretHash) != 1 || rec.RevokedAt != nil {
		return Caller{}, errBadKey
	}
	return rec.Caller, nil
}

func (a *Authenticator) record(ctx context.Context, id string) (Record, bool, error) {
	gen, err := a.cache.SyncSince(ctx, coherent.Began(ctx))
	if err != nil {
		return Record{}, false, err
	}
	if c, ok := a.cache.Get(id); ok {
		return c.rec, c.found, nil
	}
	rec, err := a.store.Key(ctx, id)
	found := err == nil
	if err != nil && !errors.Is(err, ErrNoKey) {
		return Record{}, false, err
	}
	a.cache.Put(gen, id, cached{rec: rec, found: found}) // unknown ids too: a scanner costs no lookups
	return rec, found, nil
}

// PostgresStore reads keys from the notifier's schema, which owns apps and keys (see
// services/notifier/postgres/migrations). Other services that authenticate callers use it
// read-only.
type PostgresStore struct {
	Pool *pgxpool.Pool
}

// Key implements Store.
func (s PostgresStore) Key(ctx context.Context, keyID string) (Record, error) {
	var r Record
	var channels []string
	var contacts string
	err := s.Pool.QueryRow(ctx, `
		SELECT a.id, a.name, a.admin, a.allowed_categories, a.allowed_channels, a.requests_per_second,
			a.burst, a.contacts_access, k.secret_hash, k.revoked_at
		FROM notifier.app_keys k JOIN notifier.apps a ON a.id = k.app_id
		WHERE k.id = $1`, keyID).Scan(&r.AppID, &r.AppName, &r.Admin, &r.AllowedCategories, &channels,
		&r.RatePerSecond, &r.Burst, &contacts, &r.SecretHash, &r.RevokedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Record{}, ErrNoKey
	}
	if err != nil {
		return Record{}, fmt.Errorf("look up app key: %w", err)
	}
	// The column's CHECK allows only the three names; anything else grants nothing.
	r.Contacts, _ = ParseContactsAccess(contacts)
	for _, ch := range channels {
		r.AllowedChannels = append(r.AllowedChannels, delivery.Channel(ch))
	}
	r.KeyID = keyID
	return r, nil
}

// Changes implements Store.
func (s PostgresStore) Changes(ctx context.Context, horizon uint64) ([]string, uint64, error) {
	return pgdb.Changes(ctx, s.Pool, ChangesTable, horizon)
}

// ChangesTable is the change feed that writers of keys and apps append key ids to.
const ChangesTable = "notifier.key_changes"

type callerKey struct{}

// WithCaller returns ctx carrying the authenticated caller.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the caller that the interceptor authenticated.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// Token returns the bearer token of an incoming gRPC call, or "".
func Token(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if t, ok := strings.CutPrefix(v, "Bearer "); ok {
			return strings.TrimSpace(t)
		}
	}
	return ""
}

// UnaryServerInterceptor authenticates every call to a method under one of the protected
// service prefixes (e.g. "/herald.v1.") and puts the caller in the context. Health checks and
// reflection stay open.
func UnaryServerInterceptor(a *Authenticator, protected ...string) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		ctx = coherent.WithBegan(ctx, time.Now())
		for _, p := range protected {
			if strings.HasPrefix(info.FullMethod, p) {
				tok := Token(ctx)
				if tok == "" {
					return nil, errs.Status(errs.E(errs.Unauthenticated, "missing app key: send `authorization: Bearer <key>`")).Err()
				}
				c, err := a.Authenticate(ctx, tok)
				if err != nil {
					return nil, errs.Status(err).Err()
				}
				return h(WithCaller(ctx, c), req)
			}
		}
		return h(ctx, req)
	}
}

// Credentials returns per-RPC credentials that send key as a bearer token. They work over
// plaintext connections, which Herald uses on loopback; use TLS elsewhere.
func Credentials(key string) grpc.DialOption {
	return grpc.WithPerRPCCredentials(bearer(key))
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }
