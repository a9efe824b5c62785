package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/templates"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/notifier"
	"github.com/heraldhq/herald/services/notifier/rpc"
)

var (
	welcomeDefault = templates.Parts{PushTitle: "Welcome, {{.name}}", PushBody: "Glad you are here.",
		SMSBody: "Welcome to Herald, {{.name}}!", EmailSubject: "Welcome", EmailHTML: "<p>Hello {{.name}}</p>"}
	welcomePT = templates.Parts{PushTitle: "Bem-vindo, {{.name}}", PushBody: "Que bom tê-lo cá.",
		SMSBody: "Bem-vindo ao Herald, {{.name}}!", EmailSubject: "Bem-vindo", EmailHTML: "<p>Olá {{.name}}</p>"}
	welcomePTBR = templates.Parts{PushTitle: "Boas-vindas, {{.name}}", PushBody: "Que bom ter você aqui.",
		SMSBody: "Boas-vindas ao Herald, {{.name}}!", EmailSubject: "Boas-vindas", EmailHTML: "<p>Oi {{.name}}</p>"}
)

// TestTemplateLocalesStored checks the stored JSON shape and that translations come back as
// they went in, sorted by tag.
func TestTemplateLocalesStored(t *testing.T) {
	s, pool := open(t)
	in := &notifier.Template{Name: "welcome", Description: "first", Parts: welcomeDefault,
		Locales: []templates.Translation{{Locale: "pt-BR", Parts: welcomePTBR}, {Locale: "pt", Parts: welcomePT}}}
	created, err := s.CreateTemplate(t.Context(), in, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Template(t.Context(), "welcome", created.Version)
	if err != nil {
		t.Fatal(err)
	}
	want := []templates.Translation{{Locale: "pt", Parts: welcomePT}, {Locale: "pt-BR", Parts: welcomePTBR}}
	if got.Parts != welcomeDefault || !reflect.DeepEqual(got.Locales, want) || got.Description != "first" {
		t.Errorf("Template = %+v; want the default parts and locales %+v", got, want)
	}

	var raw []byte
	if err := pool.QueryRow(t.Context(), `SELECT parts FROM notifier.templates WHERE name = 'welcome'`).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	var shape map[string]map[string]any
	if err := json.Unmarshal(raw, &shape); err != nil {
		t.Fatalf("stored parts %s: %v", raw, err)
	}
	if shape["default"]["sms_body"] != welcomeDefault.SMSBody || shape["default"]["email_text"] != nil {
		t.Errorf("stored default parts %v; want snake_case names and no empty parts", shape["default"])
	}
	if pt, ok := shape["locales"]["pt-BR"].(map[string]any); !ok || pt["push_title"] != welcomePTBR.PushTitle {
		t.Errorf("stored locales %v; want pt-BR by tag", shape["locales"])
	}

	// Without translations there is no locales key, and none comes back.
	if _, err := s.CreateTemplate(t.Context(), &notifier.Template{Name: "plain", Parts: templates.Parts{SMSBody: "x"}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(t.Context(), `SELECT parts FROM notifier.templates WHERE name = 'plain'`).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	if string(raw) != `{"default": {"sms_body": "x"}}` {
		t.Errorf("stored %s", raw)
	}
	if got, err := s.Template(t.Context(), "plain", 0); err != nil || got.Locales != nil {
		t.Errorf("Template = %+v, %v; want no locales", got, err)
	}
}

// localeDirectory knows users by id, each with a phone and a locale.
type localeDirectory map[string]string

func (d localeDirectory) Resolve(_ context.Context, ids []string, _ []notifier.Target) (*notifier.Recipients, error) {
	out := &notifier.Recipients{Users: map[string]notifier.User{}}
	for _, id := range ids {
		if l, ok := d[id]; ok {
			out.Users[id] = notifier.User{ID: id, Phone: "+14155550123", Email: id + "@example.com", Locale: l}
		}
	}
	return out, nil
}

func templateService(t *testing.T) (*notifier.Sender, *rpc.Server, *pgxpool.Pool) {
	s, pool := open(t)
	svc := newSender(t, s, deliveryStore(t, pool), &lostPublisher{}, func() time.Time { return t0 })
	svc.Directory = localeDirectory{"ana": "pt-BR", "rui": "pt-PT", "zoe": "fr", "bob": ""}
	return svc, &rpc.Server{Sender: svc, Templates: svc.Templates}, pool
}

// TestSendTemplateLocaleFallback sends a localized template through the real store to users
// in several locales: pt-BR gets its translation, pt-PT falls back to pt, fr to the default.
func TestSendTemplateLocaleFallback(t *testing.T) {
	svc, _, pool := templateService(t)
	if _, err := svc.Templates.CreateTemplate(t.Context(), appkey.Caller{AppID: newID(t), Admin: true}, &notifier.Template{Name: "welcome", Parts: welcomeDefault,
		Locales: []templates.Translation{{Locale: "PT", Parts: welcomePT}, {Locale: "pt-br", Parts: welcomePTBR}}}); err != nil {
		t.Fatal(err)
	}
	caller := appkey.Caller{AppID: newID(t), AppName: "billing"}
	tests := []struct {
		user, locale       string
		wantSMS, wantTitle string
	}{
		{"ana", "", "Boas-vindas ao Herald, Ana!", "Boas-vindas"},
		{"rui", "", "Bem-vindo ao Herald, Ana!", "Bem-vindo"},
		{"zoe", "", "Welcome to Herald, Ana!", "Welcome"},
		{"bob", "", "Welcome to Herald, Ana!", "Welcome"},
		{"zoe", "pt-BR", "Boas-vindas ao Herald, Ana!", "Boas-vindas"},
		{"ana", "pt-AO", "Bem-vindo ao Herald, Ana!", "Bem-vindo"},
	}
	for _, tt := range tests {
		t.Run(tt.user+" "+tt.locale, func(t *testing.T) {
			res, err := svc.Send(t.Context(), caller, &notifier.SendRequest{UserID: tt.user, Category: "account",
				Template: &notifier.TemplateRef{Name: "welcome", Locale: tt.locale}, Data: map[string]any{"name": "Ana"}})
			if err != nil {
				t.Fatal(err)
			}
			stored, err := svc.GetNotification(t.Context(), caller, res.Notification.ID)
			if err != nil {
				t.Fatal(err)
			}
			if stored.Template == nil || stored.Template.Version != 1 || stored.Template.Locale != tt.locale {
				t.Errorf("stored template ref %+v; want version 1, locale %q", stored.Template, tt.locale)
			}
			contents := map[string]string{}
			rows, err := pool.Query(t.Context(), `
				SELECT channel, coalesce(content->>'body', content->>'subject') FROM delivery.deliveries
				WHERE notification_id = $1`, res.Notification.ID)
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var ch, text string
				if err := rows.Scan(&ch, &text); err != nil {
					t.Fatal(err)
				}
				contents[ch] = text
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			if want := map[string]string{"sms": tt.wantSMS, "email": tt.wantTitle}; !reflect.DeepEqual(contents, want) {
				t.Errorf("stored contents %v; want %v", contents, want)
			}
			if len(stored.Deliveries) != 2 {
				t.Errorf("deliveries %+v; want sms and email", stored.Deliveries)
			}
		})
	}
}

// TestRenderTemplateRPC calls the gRPC handlers on the real store and checks what a client sees:
// the response, and the status codes with their field violations (errs.Status is what the
// server's interceptor answers with).
func TestRenderTemplateRPC(t *testing.T) {
	_, srv, _ := templateService(t)
	ctx := appkey.WithCaller(t.Context(), appkey.Caller{AppID: newID(t), AppName: "billing"})
	created, err := srv.CreateTemplate(ctx, &heraldv1.CreateTemplateRequest{Template: &heraldv1.Template{
		Name: "welcome", Description: "hello",
		Parts: &heraldv1.TemplateParts{PushTitle: welcomeDefault.PushTitle, PushBody: welcomeDefault.PushBody,
			SmsBody: welcomeDefault.SMSBody, EmailSubject: welcomeDefault.EmailSubject, EmailHtml: welcomeDefault.EmailHTML},
		Locales: []*heraldv1.LocalizedParts{{Locale: "pt-br", Parts: &heraldv1.TemplateParts{PushTitle: welcomePTBR.PushTitle,
			PushBody: welcomePTBR.PushBody, SmsBody: "🎉 " + welcomePTBR.SMSBody, EmailSubject: welcomePTBR.EmailSubject, EmailHtml: welcomePTBR.EmailHTML}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if l := created.Template.GetLocales(); len(l) != 1 || l[0].GetLocale() != "pt-BR" {
		t.Errorf("created locales %v; want pt-BR, canonical", l)
	}
	got, err := srv.GetTemplate(ctx, &heraldv1.GetTemplateRequest{Name: "welcome"})
	if err != nil || !proto.Equal(got.Template, created.Template) {
		t.Errorf("GetTemplate = %v, %v; want %v", got, err, created.Template)
	}

	data, err := structpb.NewStruct(map[string]any{"name": "<Ana>"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := srv.RenderTemplate(ctx, &heraldv1.RenderTemplateRequest{Name: "welcome", Locale: "pt-BR-u-nu-latn", Data: data})
	if err != nil {
		t.Fatal(err)
	}
	want := &heraldv1.RenderTemplateResponse{
		Content: &heraldv1.RenderedContent{PushTitle: "Boas-vindas, <Ana>", PushBody: "Que bom ter você aqui.",
			SmsBody: "🎉 Boas-vindas ao Herald, <Ana>!", EmailSubject: "Boas-vindas", EmailHtml: "<p>Oi &lt;Ana&gt;</p>"},
		Locale: "pt-BR", Version: 1, SmsEncoding: "UCS-2", SmsSegments: 1,
	}
	if !proto.Equal(res, want) {
		t.Errorf("RenderTemplate = %v\nwant %v", res, want)
	}
	res, err = srv.RenderTemplate(ctx, &heraldv1.RenderTemplateRequest{Name: "welcome", Version: proto.Int32(1), Data: data})
	if err != nil || res.Locale != "" || res.SmsEncoding != "GSM-7" || res.Content.SmsBody != "Welcome to Herald, <Ana>!" {
		t.Errorf("RenderTemplate default = %v, %v", res, err)
	}

	long, err := structpb.NewStruct(map[string]any{"name": strings.Repeat("n", 1600)})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		req   *heraldv1.RenderTemplateRequest
		code  codes.Code
		field string
	}{
		{"unknown template", &heraldv1.RenderTemplateRequest{Name: "nope", Data: data}, codes.NotFound, ""},
		{"unknown version", &heraldv1.RenderTemplateRequest{Name: "welcome", Version: proto.Int32(2), Data: data}, codes.NotFound, ""},
		{"zero version", &heraldv1.RenderTemplateRequest{Name: "welcome", Version: proto.Int32(0), Data: data}, codes.InvalidArgument, "version"},
		{"no name", &heraldv1.RenderTemplateRequest{Data: data}, codes.InvalidArgument, "name"},
		{"bad locale", &heraldv1.RenderTemplateRequest{Name: "welcome", Locale: "pt BR", Data: data}, codes.InvalidArgument, "locale"},
		{"missing data", &heraldv1.RenderTemplateRequest{Name: "welcome"}, codes.InvalidArgument, "template.push_title"},
		{"sms over the limit", &heraldv1.RenderTemplateRequest{Name: "welcome", Data: long}, codes.InvalidArgument, "template.sms_body"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := srv.RenderTemplate(ctx, tc.req)
			st := errs.Status(err)
			if st.Code() != tc.code {
				t.Fatalf("status %v; want %v", st, tc.code)
			}
			if tc.field == "" {
				return
			}
			var fields []string
			for _, d := range st.Details() {
				if br, ok := d.(*errdetails.BadRequest); ok {
					for _, v := range br.FieldViolations {
						fields = append(fields, v.Field)
					}
				}
			}
			if !reflect.DeepEqual(fields, []string{tc.field}) {
				t.Errorf("field violations %v; want %s", fields, tc.field)
			}
		})
	}

	// Creating with an incomplete translation names the translation by its index.
	_, err = srv.CreateTemplate(ctx, &heraldv1.CreateTemplateRequest{Template: &heraldv1.Template{
		Name: "welcome", Parts: &heraldv1.TemplateParts{SmsBody: "hi", PushBody: "hi"},
		Locales: []*heraldv1.LocalizedParts{{Locale: "de", Parts: &heraldv1.TemplateParts{SmsBody: "hallo", PushBody: "hallo"}},
			{Locale: "fr", Parts: &heraldv1.TemplateParts{SmsBody: "salut"}}},
	}})
	if st := errs.Status(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "template.locales[1].parts.push_body") {
		t.Errorf("incomplete translation: %v", st)
	}
}

// TestTemplateOwnership: a template name belongs to the app that created its first version.
// Another app cannot add a version (which every Send without a version would then use), even
// when both race to create the name; the owner and admin apps can. Templates from before apps
// were recorded belong to the admins.
func TestTemplateOwnership(t *testing.T) {
	svc, _, pool := templateService(t)
	ctx := t.Context()
	owner := appkey.Caller{AppID: newID(t), AppName: "billing"}
	other := appkey.Caller{AppID: newID(t), AppName: "shop"}
	admin := appkey.Caller{AppID: newID(t), AppName: "ops", Admin: true}
	create := func(c appkey.Caller, name, body string) (*notifier.Template, error) {
		return svc.Templates.CreateTemplate(ctx, c, &notifier.Template{Name: name, Parts: templates.Parts{SMSBody: body}})
	}
	if v, err := create(owner, "receipt", "v1"); err != nil || v.Version != 1 {
		t.Fatalf("owner creates: %+v, %v", v, err)
	}
	_, err := create(other, "receipt", "Your account is locked: log in at evil.example")
	if errs.KindOf(err) != errs.PermissionDenied || !strings.Contains(errs.Status(err).Message(), `template "receipt" belongs to another app`) {
		t.Fatalf("another app adds a version: %v, want PermissionDenied", err)
	}
	if latest, err := svc.Templates.GetTemplate(ctx, "receipt", 0); err != nil || latest.Version != 1 || latest.Parts.SMSBody != "v1" {
		t.Fatalf("latest after the refusal = %+v, %v; want version 1 unchanged", latest, err)
	}
	for i, c := range []appkey.Caller{owner, admin, owner} {
		if v, err := create(c, "receipt", "v"); err != nil || v.Version != i+2 {
			t.Fatalf("%s adds version %d: %+v, %v", c.AppName, i+2, v, err)
		}
	}
	var apps []string
	rows, err := pool.Query(ctx, `SELECT app_id::text FROM notifier.templates WHERE name = 'receipt' ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			t.Fatal(err)
		}
		apps = append(apps, a)
	}
	if want := []string{owner.AppID.String(), owner.AppID.String(), admin.AppID.String(), owner.AppID.String()}; !reflect.DeepEqual(apps, want) {
		t.Errorf("versions created by %v, want %v", apps, want)
	}

	// A template stored before the migration has no app: only admins add versions.
	if _, err := pool.Exec(ctx, `INSERT INTO notifier.templates (name, version, parts) VALUES ('legacy', 1, '{"default":{"sms_body":"x"}}')`); err != nil {
		t.Fatal(err)
	}
	if _, err := create(owner, "legacy", "y"); errs.KindOf(err) != errs.PermissionDenied {
		t.Errorf("an app adds to a legacy template: %v, want PermissionDenied", err)
	}
	if v, err := create(admin, "legacy", "y"); err != nil || v.Version != 2 {
		t.Errorf("an admin adds to a legacy template: %+v, %v", v, err)
	}

	// Two apps create the same new name at once: one owns it, the other is refused.
	for round := range 10 {
		name := fmt.Sprintf("race-%d", round)
		var wg sync.WaitGroup
		results := make([]error, 2)
		start := make(chan struct{})
		for i, c := range []appkey.Caller{owner, other} {
			wg.Go(func() {
				<-start
				_, results[i] = create(c, name, "x")
			})
		}
		close(start)
		wg.Wait()
		if (results[0] == nil) == (results[1] == nil) || errs.KindOf(errors.Join(results...)) != errs.PermissionDenied {
			t.Fatalf("%s: results %v, want one success and one PermissionDenied", name, results)
		}
	}
}
