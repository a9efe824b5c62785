package main

import (
	"strings"
	"testing"
)

// appRow returns the fields of the apps table's row for name.
func appRow(t *testing.T, server []string, name string) []string {
	t.Helper()
	out, err := heraldctl(t, server, "apps", "list")
	if err != nil {
		t.Fatalf("apps list: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if h := strings.Fields(lines[0]); len(h) != 8 || h[3] != "CONTACTS" {
		t.Fatalf("apps list header %q", lines[0])
	}
	for _, line := range lines[1:] {
		if f := strings.Fields(line); len(f) > 1 && f[1] == name {
			return f
		}
	}
	t.Fatalf("no app %s in\n%s", name, out)
	return nil
}

// TestAppsContactsAccess: apps start with no contacts access unless created with --contacts;
// apps update changes what it is given and keeps the rest; the list shows the access.
func TestAppsContactsAccess(t *testing.T) {
	server := apiServer(t)
	if _, err := heraldctl(t, server, "apps", "create", "mailer", "--categories", "account", "--channels", "email"); err != nil {
		t.Fatal(err)
	}
	if _, err := heraldctl(t, server, "apps", "create", "crm", "--contacts", "write"); err != nil {
		t.Fatal(err)
	}
	if _, err := heraldctl(t, server, "apps", "create", "odd", "--contacts", "everything"); err == nil ||
		!strings.Contains(err.Error(), "none, read or write") {
		t.Errorf("apps create --contacts everything: %v", err)
	}
	for name, want := range map[string][]string{
		"mailer": {"false", "none", "account", "email"},
		"crm":    {"false", "write", "all", "all"},
	} {
		if got := appRow(t, server, name); strings.Join(got[2:6], " ") != strings.Join(want, " ") {
			t.Errorf("%s: %q, want admin, contacts, categories, channels %q", name, got, want)
		}
	}

	out, err := heraldctl(t, server, "apps", "update", "mailer", "--contacts", "read")
	if err != nil || !strings.Contains(out, "mailer") {
		t.Fatalf("apps update = %q, %v", out, err)
	}
	if got := appRow(t, server, "mailer"); strings.Join(got[2:6], " ") != "false read account email" {
		t.Errorf("mailer after the update: %q; want contacts read, its scopes kept", got)
	}
	id := appRow(t, server, "mailer")[0]
	if _, err := heraldctl(t, server, "apps", "update", id, "--channels", "email,sms", "--contacts", "none"); err != nil {
		t.Fatal(err)
	}
	if got := appRow(t, server, "mailer"); strings.Join(got[2:6], " ") != "false none account email,sms" {
		t.Errorf("mailer after the update by id: %q", got)
	}
	for _, args := range [][]string{{"nobody", "--contacts", "read"}, {"mailer"}, {"mailer", "--contacts", "all"}} {
		if _, err := heraldctl(t, server, append([]string{"apps", "update"}, args...)...); err == nil {
			t.Errorf("apps update %q succeeded", args)
		}
	}
}
