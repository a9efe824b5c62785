package postgres_test

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/templates"
	"github.com/heraldhq/herald/services/notifier"
	"github.com/heraldhq/herald/services/notifier/postgres"
)

func TestTemplateVersions(t *testing.T) {
	s, _ := open(t)
	parts := func(v string) templates.Parts {
		return templates.Parts{PushTitle: "v" + v, PushBody: "Hello {{.name}}", SMSBody: "sms " + v,
			EmailSubject: "Subject " + v, EmailHTML: "<p>{{.name}}</p>", EmailText: "text " + v}
	}
	for i, v := range []string{"1", "2", "3"} {
		got, err := s.CreateTemplate(t.Context(), &notifier.Template{Name: "welcome", Description: "d" + v, Parts: parts(v)}, nil)
		if err != nil {
			t.Fatalf("CreateTemplate %s: %v", v, err)
		}
		if got.Version != i+1 || got.Name != "welcome" || got.CreatedAt.IsZero() {
			t.Errorf("CreateTemplate %s = %+v, want version %d", v, got, i+1)
		}
	}
	if got, err := s.CreateTemplate(t.Context(), &notifier.Template{Name: "other", Parts: parts("o")}, nil); err != nil || got.Version != 1 {
		t.Errorf("first version of another name = %+v, %v; want version 1", got, err)
	}

	tests := []struct {
		name        string
		tname       string
		version     int
		wantVersion int
		wantErr     errs.Kind
	}{
		{"latest", "welcome", 0, 3, 0},
		{"first", "welcome", 1, 1, 0},
		{"second", "welcome", 2, 2, 0},
		{"other name latest", "other", 0, 1, 0},
		{"unknown version", "welcome", 4, 0, errs.NotFound},
		{"unknown name", "nope", 0, 0, errs.NotFound},
		{"unknown name and version", "nope", 1, 0, errs.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Template(t.Context(), tt.tname, tt.version)
			if tt.wantErr != 0 {
				if !errs.Is(err, tt.wantErr) {
					t.Fatalf("Template = %+v, %v; want error kind %d", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Template: %v", err)
			}
			want := "o"
			if tt.tname == "welcome" {
				want = string(rune('0' + tt.wantVersion))
			}
			if got.Name != tt.tname || got.Version != tt.wantVersion || got.Parts != parts(want) ||
				(tt.tname == "welcome" && got.Description != "d"+want) {
				t.Errorf("Template = %+v, want version %d with parts %+v", got, tt.wantVersion, parts(want))
			}
		})
	}
}

func TestTemplateVersionsConcurrent(t *testing.T) {
	s, _ := open(t)
	// CreateTemplate tries five times, and each failure of one creator is another creator's
	// success, so five concurrent creators must all succeed.
	const creators = 5
	versions := make([]int, creators)
	failures := make([]error, creators)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range creators {
		wg.Go(func() {
			<-start
			got, err := s.CreateTemplate(context.Background(),
				&notifier.Template{Name: "race", Parts: templates.Parts{SMSBody: "x"}}, nil)
			if err == nil {
				versions[i] = got.Version
			}
			failures[i] = err
		})
	}
	close(start)
	wg.Wait()
	for i, err := range failures {
		if err != nil {
			t.Errorf("creator %d: %v", i, err)
		}
	}
	slices.Sort(versions)
	if want := []int{1, 2, 3, 4, 5}; !slices.Equal(versions, want) {
		t.Errorf("versions %v, want %v", versions, want)
	}
	if got, err := s.Template(t.Context(), "race", 0); err != nil || got.Version != creators {
		t.Errorf("latest = %+v, %v; want version %d", got, err, creators)
	}
}

func TestCreateApp(t *testing.T) {
	s, pool := open(t)
	a := &notifier.App{ID: newID(t), Name: "billing", Admin: true, CreatedAt: t0}
	if err := s.CreateApp(t.Context(), a); err != nil {
		t.Fatalf("CreateApp: %v", err)
	}
	tests := []struct {
		name    string
		app     *notifier.App
		wantErr errs.Kind
		ok      bool
	}{
		{"taken name", &notifier.App{ID: newID(t), Name: "billing", CreatedAt: t0}, errs.Conflict, false},
		{"taken id", &notifier.App{ID: a.ID, Name: "other", CreatedAt: t0}, errs.Conflict, false},
		{"free name", &notifier.App{ID: newID(t), Name: "shipping", CreatedAt: t0}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.CreateApp(t.Context(), tt.app)
			if tt.ok {
				if err != nil {
					t.Fatalf("CreateApp: %v", err)
				}
				return
			}
			if !errs.Is(err, tt.wantErr) {
				t.Errorf("CreateApp: %v, want error kind %d", err, tt.wantErr)
			}
		})
	}
	if n := count(t, pool, `SELECT count(*) FROM notifier.apps WHERE name = 'billing' AND id = $1 AND admin`, a.ID); n != 1 {
		t.Errorf("the first billing app was changed")
	}
}

func TestAddKey(t *testing.T) {
	s, pool := open(t)
	auth := appkey.NewAuthenticator(appkey.PostgresStore{Pool: pool})
	a := &notifier.App{ID: newID(t), Name: "billing", CreatedAt: t0}
	if err := s.CreateApp(t.Context(), a); err != nil {
		t.Fatal(err)
	}

	k := appkey.New()
	if err := s.AddKey(t.Context(), newID(t), k.ID, k.Hash(), 2); !errs.Is(err, errs.NotFound) {
		t.Errorf("AddKey for an unknown app: %v, want NotFound", err)
	}
	if _, err := auth.Authenticate(t.Context(), k.String()); !errs.Is(err, errs.Unauthenticated) {
		t.Errorf("a key refused by AddKey authenticates: %v", err)
	}

	if err := s.AddKey(t.Context(), a.ID, k.ID, k.Hash(), 2); err != nil {
		t.Fatalf("AddKey: %v", err)
	}
	c, err := auth.Authenticate(t.Context(), k.String())
	if err != nil {
		t.Fatalf("Authenticate: %v", err)
	}
	if c.AppID != a.ID || c.AppName != "billing" || c.KeyID != k.ID || c.Admin || len(c.AllowedCategories) != 0 {
		t.Errorf("caller = %+v, want app %s (billing) with key %s", c, a.ID, k.ID)
	}
	wrong := appkey.New()
	wrong.ID = k.ID
	if _, err := auth.Authenticate(t.Context(), wrong.String()); !errs.Is(err, errs.Unauthenticated) {
		t.Errorf("a wrong secret authenticates: %v", err)
	}
}

func TestEnsureKey(t *testing.T) {
	s, pool := open(t)
	auth := appkey.NewAuthenticator(appkey.PostgresStore{Pool: pool})
	k := appkey.New()

	authenticates := func(t *testing.T, key appkey.Key, app string, admin bool) appkey.Caller {
		t.Helper()
		c, err := auth.Authenticate(t.Context(), key.String())
		if err != nil {
			t.Fatalf("Authenticate: %v", err)
		}
		if c.AppName != app || c.Admin != admin || c.KeyID != key.ID {
			t.Errorf("caller = %+v, want app %s admin %v key %s", c, app, admin, key.ID)
		}
		return c
	}
	refused := func(t *testing.T, key appkey.Key) {
		t.Helper()
		if c, err := auth.Authenticate(t.Context(), key.String()); !errs.Is(err, errs.Unauthenticated) {
			t.Errorf("Authenticate = %+v, %v; want Unauthenticated", c, err)
		}
	}
	ensure := func(t *testing.T, app string, admin bool, key appkey.Key) {
		t.Helper()
		if err := s.EnsureKey(t.Context(), postgres.Grant{App: app, Admin: admin}, key.ID, key.Hash()); err != nil {
			t.Fatalf("EnsureKey: %v", err)
		}
	}

	t.Run("creates the app", func(t *testing.T) {
		ensure(t, "bootstrap", true, k)
		authenticates(t, k, "bootstrap", true)
	})
	t.Run("idempotent", func(t *testing.T) {
		ensure(t, "bootstrap", true, k)
		ensure(t, "bootstrap", true, k)
		if n := count(t, pool, `SELECT count(*) FROM notifier.apps`); n != 1 {
			t.Errorf("%d apps, want 1", n)
		}
		if n := count(t, pool, `SELECT count(*) FROM notifier.app_keys`); n != 1 {
			t.Errorf("%d keys, want 1", n)
		}
		authenticates(t, k, "bootstrap", true)
	})
	t.Run("never demotes an admin", func(t *testing.T) {
		ensure(t, "bootstrap", false, k)
		authenticates(t, k, "bootstrap", true)
	})
	t.Run("revoked key refused", func(t *testing.T) {
		if _, err := s.RevokeKey(t.Context(), k.ID, t0); err != nil {
			t.Fatal(err)
		}
		refused(t, k)
	})
	t.Run("a revoked key stays revoked", func(t *testing.T) {
		// The notifier ensures its bootstrap key at every start: a leaked key that an operator
		// revoked must not come back when a replica restarts.
		ensure(t, "bootstrap", true, k)
		refused(t, k)
	})
	t.Run("new secret replaces the old", func(t *testing.T) {
		rotated := appkey.New()
		rotated.ID = k.ID
		ensure(t, "bootstrap", true, rotated)
		authenticates(t, rotated, "bootstrap", true)
		refused(t, k)
		k = rotated
	})
	t.Run("existing app keeps its id", func(t *testing.T) {
		a := &notifier.App{ID: newID(t), Name: "dev", CreatedAt: t0}
		if err := s.CreateApp(t.Context(), a); err != nil {
			t.Fatal(err)
		}
		dev := appkey.New()
		ensure(t, "dev", false, dev)
		c, err := auth.Authenticate(t.Context(), dev.String())
		if err != nil {
			t.Fatalf("Authenticate: %v", err)
		}
		if c.AppID != a.ID || c.Admin {
			t.Errorf("caller = %+v, want app %s, not admin", c, a.ID)
		}
		// The bootstrap key is untouched.
		authenticates(t, k, "bootstrap", true)
	})
	t.Run("a key of another app is not moved", func(t *testing.T) {
		// Moving it would give whoever holds the key the rights of the app it is ensured for.
		err := s.EnsureKey(t.Context(), postgres.Grant{App: "herald-notifier", Contacts: appkey.ContactsRead}, k.ID, k.Hash())
		if !errs.Is(err, errs.Conflict) {
			t.Errorf("EnsureKey of the bootstrap key for another app: %v, want Conflict", err)
		}
		if c := authenticates(t, k, "bootstrap", true); c.Contacts != appkey.ContactsNone {
			t.Errorf("the bootstrap app got contacts access %s", c.Contacts)
		}
		if n := count(t, pool, `SELECT count(*) FROM notifier.apps WHERE name = 'herald-notifier'`); n != 0 {
			t.Errorf("an app was made for a key that is not its own")
		}
		dev := appkey.New()
		ensure(t, "dev", false, dev)
		if err := s.EnsureKey(t.Context(), postgres.Grant{App: "bootstrap", Admin: true}, dev.ID, dev.Hash()); !errs.Is(err, errs.Conflict) {
			t.Errorf("EnsureKey of a plain app's key as an admin key: %v, want Conflict", err)
		}
		authenticates(t, dev, "dev", false)
	})
}

// TestEnsureKeyContactsAccess: the notifier's own key for the contacts service is installed
// with contacts read access; an app's access is raised to what EnsureKey grants, never lowered,
// and every key of the app sees the change from its next call.
func TestEnsureKeyContactsAccess(t *testing.T) {
	s, pool := open(t)
	auth := appkey.NewAuthenticator(appkey.PostgresStore{Pool: pool})
	access := func(t *testing.T, key appkey.Key) appkey.ContactsAccess {
		t.Helper()
		c, err := auth.Authenticate(t.Context(), key.String())
		if err != nil {
			t.Fatalf("Authenticate: %v", err)
		}
		return c.Contacts
	}
	ensure := func(t *testing.T, a appkey.ContactsAccess, key appkey.Key) {
		t.Helper()
		if err := s.EnsureKey(t.Context(), postgres.Grant{App: "herald-notifier", Contacts: a}, key.ID, key.Hash()); err != nil {
			t.Fatalf("EnsureKey: %v", err)
		}
	}
	k := appkey.New()
	ensure(t, appkey.ContactsRead, k)
	if got := access(t, k); got != appkey.ContactsRead {
		t.Fatalf("contacts access %s, want read", got)
	}
	apps, err := s.Apps(t.Context())
	if err != nil || len(apps) != 1 || apps[0].Admin || apps[0].Contacts != appkey.ContactsRead {
		t.Fatalf("Apps = %+v, %v", apps, err)
	}

	// Another key of the same app, issued the usual way, then a grant of write: both keys see it.
	other := appkey.New()
	if err := s.AddKey(t.Context(), apps[0].ID, other.ID, other.Hash(), notifier.MaxActiveKeys); err != nil {
		t.Fatal(err)
	}
	access(t, other) // cached
	ensure(t, appkey.ContactsWrite, k)
	for _, key := range []appkey.Key{k, other} {
		if got := access(t, key); got != appkey.ContactsWrite {
			t.Errorf("key %s: contacts access %s after the grant, want write", key.ID, got)
		}
	}
	for _, a := range []appkey.ContactsAccess{appkey.ContactsRead, appkey.ContactsNone} {
		ensure(t, a, k)
		if got := access(t, k); got != appkey.ContactsWrite {
			t.Errorf("EnsureKey with %s lowered the access to %s", a, got)
		}
	}
}

// TestKeyRotation: two active keys at most; a revocation and a scope change are seen by a
// caching authenticator from its next call on.
func TestKeyRotation(t *testing.T) {
	s, pool := open(t)
	ctx := t.Context()
	auth := appkey.NewAuthenticator(appkey.PostgresStore{Pool: pool})
	a := &notifier.App{ID: newID(t), Name: "billing", CreatedAt: t0}
	if err := s.CreateApp(ctx, a); err != nil {
		t.Fatal(err)
	}
	old, next, third := appkey.New(), appkey.New(), appkey.New()
	for _, k := range []appkey.Key{old, next} {
		if err := s.AddKey(ctx, a.ID, k.ID, k.Hash(), notifier.MaxActiveKeys); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AddKey(ctx, a.ID, third.ID, third.Hash(), notifier.MaxActiveKeys); !errs.Is(err, errs.FailedPrecondition) {
		t.Fatalf("a third active key: %v, want FailedPrecondition", err)
	}
	for _, k := range []appkey.Key{old, next} {
		if _, err := auth.Authenticate(ctx, k.String()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.RevokeKey(ctx, old.ID, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := auth.Authenticate(ctx, old.String()); !errs.Is(err, errs.Unauthenticated) {
		t.Fatalf("the revoked key still authenticates: %v", err)
	}
	if _, err := auth.Authenticate(ctx, next.String()); err != nil {
		t.Fatalf("the other key: %v", err)
	}
	if err := s.AddKey(ctx, a.ID, third.ID, third.Hash(), notifier.MaxActiveKeys); err != nil {
		t.Fatalf("a key after a revocation: %v", err)
	}
	if _, err := s.RevokeKey(ctx, "nope", t0); !errs.Is(err, errs.NotFound) {
		t.Fatalf("revoking an unknown key: %v", err)
	}
	keys, err := s.Keys(ctx, a.ID)
	if err != nil || len(keys) != 3 || keys[0].ID != third.ID {
		t.Fatalf("Keys = %+v, %v", keys, err)
	}

	if c, err := auth.Authenticate(ctx, next.String()); err != nil || c.Contacts != appkey.ContactsNone {
		t.Fatalf("a new app's caller = %+v, %v; want no contacts access", c, err)
	}
	a.AllowedCategories, a.AllowedChannels = []string{"account"}, []delivery.Channel{delivery.Email}
	a.Contacts = appkey.ContactsRead
	if err := s.UpdateApp(ctx, a); err != nil {
		t.Fatal(err)
	}
	c, err := auth.Authenticate(ctx, next.String())
	if err != nil || len(c.AllowedCategories) != 1 || c.AllowedChannels[0] != delivery.Email || c.Contacts != appkey.ContactsRead {
		t.Fatalf("caller after the scope change = %+v, %v", c, err)
	}
	apps, err := s.Apps(ctx)
	if err != nil || len(apps) != 1 || apps[0].Contacts != appkey.ContactsRead {
		t.Fatalf("Apps = %+v, %v; want billing with contacts read", apps, err)
	}
	a.Contacts = appkey.ContactsNone // the access goes as it came: at once
	if err := s.UpdateApp(ctx, a); err != nil {
		t.Fatal(err)
	}
	if c, err := auth.Authenticate(ctx, next.String()); err != nil || c.Contacts != appkey.ContactsNone {
		t.Fatalf("caller after the access was taken away = %+v, %v", c, err)
	}
}
