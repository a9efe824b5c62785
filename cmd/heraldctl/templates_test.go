package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/heraldhq/herald/internal/appkey"
	deliverypg "github.com/heraldhq/herald/internal/delivery/postgres"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/pgtest"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/notifier"
	"github.com/heraldhq/herald/services/notifier/postgres"
	"github.com/heraldhq/herald/services/notifier/rpc"
)

// migrateNotifier migrates a database as the notifier does: its own schema and the deliveries'.
func migrateNotifier(ctx context.Context, url string) error {
	pool, err := pgdb.Open(ctx, url, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	log := slog.New(slog.DiscardHandler)
	if err := postgres.Migrate(ctx, pool, log); err != nil {
		return err
	}
	return deliverypg.Migrate(ctx, pool, log)
}

// operator is the app every call to the test servers is made as: an operator's admin app.
var operator = appkey.Caller{AppID: uuid.MustParse("0190a7d2-5e3c-7000-8000-0000000000a1"), AppName: "operator", Admin: true}

// notifierDB returns a pool on a fresh database, migrated as the notifier migrates it.
func notifierDB(t *testing.T) *pgxpool.Pool {
	t.Helper()
	url := pgtest.DB(t, "notifier", migrateNotifier)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	pool, err := pgdb.Open(ctx, url, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// serve serves api's NotificationService, TemplateService and AdminService on loopback, with
// the error interceptor the notifier runs (authentication is not what these tests are about:
// every call is operator's). It returns heraldctl's leading arguments for it.
func serve(t *testing.T, api *rpc.Server) []string {
	t.Helper()
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(errs.UnaryServerInterceptor(slog.New(slog.DiscardHandler)),
		func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			return h(appkey.WithCaller(ctx, operator), req)
		}))
	heraldv1.RegisterNotificationServiceServer(srv, api)
	heraldv1.RegisterTemplateServiceServer(srv, api)
	heraldv1.RegisterAdminServiceServer(srv, api)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-done; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			t.Errorf("serve: %v", err)
		}
	})
	return []string{"--addr", lis.Addr().String(), "--key", "test", "--env-file", filepath.Join(t.TempDir(), "none.env")}
}

// apiServer serves the notifier's TemplateService and AdminService (but for dead letters and
// statistics: see opsServer) on a fresh database, and returns heraldctl's leading arguments for
// it.
func apiServer(t *testing.T) []string {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	store := postgres.New(notifierDB(t), nil)
	return serve(t, &rpc.Server{Templates: &notifier.Templates{Store: store}, Categories: &notifier.Categories{Store: store},
		Apps: &notifier.Apps{Store: store, Log: log}})
}

func heraldctl(t *testing.T, server []string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(t.Context(), append(append([]string(nil), server...), args...), &out)
	return out.String(), err
}

func TestTemplatesApplyExamples(t *testing.T) {
	server := apiServer(t)
	examples := filepath.Join("..", "..", "examples", "templates")
	out, err := heraldctl(t, server, "templates", "apply", "-f", examples)
	if want := "activity-digest: created v1\norder-shipped: created v1\nwelcome: created v1\n"; err != nil || out != want {
		t.Fatalf("first apply = %q, %v; want %q", out, err, want)
	}
	out, err = heraldctl(t, server, "templates", "apply", "-f", examples)
	if want := "activity-digest: unchanged (v1)\norder-shipped: unchanged (v1)\nwelcome: unchanged (v1)\n"; err != nil || out != want {
		t.Fatalf("second apply = %q, %v; want %q", out, err, want)
	}

	// A change to one translation makes a new version of that template only.
	dir := t.TempDir()
	for _, name := range []string{"welcome.yaml", "order-shipped.yaml"} {
		b, err := os.ReadFile(filepath.Join(examples, name))
		if err != nil {
			t.Fatal(err)
		}
		if name == "welcome.yaml" {
			b = bytes.Replace(b, []byte("Sua conta está pronta."), []byte("Sua conta já está pronta."), 1)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err = heraldctl(t, server, "templates", "apply", "--dry-run", "-f", dir)
	if want := "order-shipped: unchanged (v1)\nwelcome: would create a new version\n"; err != nil || out != want {
		t.Fatalf("dry run = %q, %v; want %q", out, err, want)
	}
	out, err = heraldctl(t, server, "templates", "apply", "-f", dir)
	if want := "order-shipped: unchanged (v1)\nwelcome: created v2\n"; err != nil || out != want {
		t.Fatalf("apply of a change = %q, %v; want %q", out, err, want)
	}

	data := `{"name": "Ana", "app": "Herald", "setup_url": "https://herald.example/setup?u=1&x=2"}`
	out, err = heraldctl(t, server, "templates", "render", "welcome", "--locale", "pt-br", "--data", data)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"welcome v2, pt-BR\n",
		"-- push_body --\nSua conta já está pronta. Toque para terminar a configuração.\n",
		"-- sms_body (GSM-7, 1 segment) --\nBoas-vindas ao Herald, Ana! Termine de configurar sua conta:",
		`<a href="https://herald.example/setup?u=1&amp;x=2">`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("render pt-BR output lacks %q:\n%s", want, out)
		}
	}
	out, err = heraldctl(t, server, "templates", "render", "--version", "1", "--locale", "fr", "--data", data, "welcome")
	if err != nil || !strings.HasPrefix(out, "welcome v1, default parts\n") || !strings.Contains(out, "-- sms_body (GSM-7, 1 segment) --\nWelcome to Herald, Ana!") {
		t.Errorf("render default = %q, %v", out, err)
	}
	out, err = heraldctl(t, server, "templates", "render", "order-shipped", "--data",
		`{"carrier": "DHL", "order": {"id": "A-1", "url": "https://shop.example/A-1", "items": [{"qty": 2, "title": "Socks"}]}}`)
	if err != nil || !strings.Contains(out, "-- push_body --\n1 item(s) on the way with DHL.\n") || !strings.Contains(out, "<li>2 × Socks</li>") {
		t.Errorf("render order-shipped = %q, %v", out, err)
	}
	if _, err := heraldctl(t, server, "templates", "render", "welcome", "--data", `{"name": "Ana"}`); status.Code(err) != codes.InvalidArgument ||
		!strings.Contains(err.Error(), "template.push_title") {
		t.Errorf("render with missing data: %v", err)
	}
	if _, err := heraldctl(t, server, "templates", "render", "nope"); status.Code(err) != codes.NotFound {
		t.Errorf("render of an unknown template: %v", err)
	}
}

func TestTemplatesApplyInvalid(t *testing.T) {
	server := apiServer(t)
	good := "name: good\nparts:\n  sms_body: hi {{.name}}\n"
	tests := []struct {
		name  string
		files map[string]string
		want  string // the error must contain this
	}{
		{"unknown field", map[string]string{"a.yaml": "name: a\nparts:\n  smsbody: hi\n"}, "a.yaml: yaml: unmarshal errors:\n  line 3: field smsbody not found"},
		{"unknown top-level field", map[string]string{"a.yaml": "name: a\nversion: 3\nparts:\n  sms_body: hi\n"}, "a.yaml: yaml: unmarshal errors:\n  line 2: field version not found"},
		{"repeated key", map[string]string{"a.yaml": "name: a\nname: b\nparts:\n  sms_body: hi\n"}, `a.yaml: yaml: unmarshal errors:`},
		{"not YAML", map[string]string{"a.yaml": "name: [a\n"}, "a.yaml: yaml: line"},
		{"empty", map[string]string{"a.yaml": ""}, "a.yaml: the file is empty"},
		{"two documents", map[string]string{"a.yml": good + "---\n" + good}, "a.yml: holds more than one YAML document"},
		{"no name", map[string]string{"a.yaml": "parts:\n  sms_body: hi\n"}, "a.yaml: name: is required"},
		{"same name twice", map[string]string{"a.yaml": good, "b.yaml": good}, "b.yaml: name: template \"good\" is also in"},
		{"part does not parse", map[string]string{"a.yaml": "name: a\nparts:\n  sms_body: hi {{.name\n"}, "a.yaml: parts.sms_body: template: sms_body:1: unclosed action"},
		{"multi-line subject", map[string]string{"a.yaml": "name: a\nparts:\n  email_subject: |\n    hi\n  email_text: x\n"}, "a.yaml: parts.email_subject: must be a single line"},
		{"bad locale", map[string]string{"a.yaml": good + "locales:\n  pt_BR!:\n    sms_body: oi\n"}, "a.yaml: locales.pt_BR!: must be a BCP 47 language tag"},
		{"same locale twice", map[string]string{"a.yaml": good + "locales:\n  pt-BR:\n    sms_body: oi\n  pt-br:\n    sms_body: oi\n"}, "a.yaml: locales.pt-br: is the same locale as pt-BR"},
		{"incomplete translation", map[string]string{"a.yaml": "name: a\nparts:\n  sms_body: hi\n  push_body: hi\nlocales:\n  pt-br:\n    sms_body: oi\n"}, "a.yaml: locales.pt-br.push_body: is required"},
		{"static text over a limit", map[string]string{"a.yaml": "name: a\nparts:\n  sms_body: " + strings.Repeat("a", 1531) + "\n"}, "a.yaml: parts.sms_body: renders to 11 GSM-7 segments"},
		{"refused by the server", map[string]string{"a.yaml": "name: Not A Name\nparts:\n  sms_body: hi\n"}, "a.yaml: name: must be 1-128 lower-case letters"},
		{"no channel", map[string]string{"a.yaml": "name: a\nparts:\n  email_text: hi\n"}, "a.yaml: parts.email_subject: is required with an email body"},
		{"no files", map[string]string{"README.md": "x"}, "no *.yaml or *.yml files"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tc.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			out, err := heraldctl(t, server, "templates", "apply", "-f", dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("apply = %q, %v; want an error containing %q", out, err, tc.want)
			}
		})
	}
	// A bad file anywhere means nothing is created: every file is checked first.
	dir := t.TempDir()
	for name, content := range map[string]string{"a.yaml": good, "b.yaml": "name: b\nparts:\n  sms_body: '{{'\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := heraldctl(t, server, "templates", "apply", "-f", dir); err == nil {
		t.Fatal("apply with a bad file succeeded")
	}
	if _, err := heraldctl(t, server, "templates", "render", "good", "--data", `{"name": "x"}`); status.Code(err) != codes.NotFound {
		t.Errorf("a template was created next to a bad file: %v", err)
	}
}

// TestExplain checks that the server's field paths become the file's: a translation is named by
// its tag as the file spells it.
func TestExplain(t *testing.T) {
	l := loaded{file: "w.yaml", locales: []string{"de", "pt-br"}}
	st, err := status.New(codes.InvalidArgument, "invalid request").WithDetails(&errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: "template.locales[1].parts.sms_body", Description: "too long"},
			{Field: "template.locales[0].locale", Description: "bad"},
			{Field: "template.parts.push_body", Description: "no"},
			{Field: "template.locales[7].parts.sms_body", Description: "unknown index"},
		}})
	if err != nil {
		t.Fatal(err)
	}
	want := "w.yaml: locales.pt-br.sms_body: too long\nw.yaml: locales.de.locale: bad\nw.yaml: parts.push_body: no\n" +
		"w.yaml: locales[7].parts.sms_body: unknown index"
	if got := l.explain(st.Err()).Error(); got != want {
		t.Errorf("explain =\n%s\nwant\n%s", got, want)
	}
	if got := l.explain(status.Error(codes.Unavailable, "down")).Error(); !strings.HasPrefix(got, "w.yaml: ") {
		t.Errorf("explain of another code = %q", got)
	}
}
