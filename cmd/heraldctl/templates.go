package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/heraldhq/herald/internal/server"
	"github.com/heraldhq/herald/internal/templates"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

const templatesUsage = `usage:
  heraldctl templates apply -f DIR [--dry-run]
      create a new version of every template in DIR's *.yaml and *.yml files whose content
      differs from its latest version
  heraldctl templates render NAME [--version N] [--locale L] [--data JSON]
      render a template version with sample data, as a recipient in locale L would get it

A template file describes one template:

  name: welcome
  description: Sent once, after sign-up.
  parts:                     # the default parts; each is a Go template
    push_title: Welcome, {{.name}}
    push_body: ...
    sms_body: ...
    email_subject: ...
    email_html: ...          # an html/template: data is escaped
    email_text: ...
  locales:                   # optional translations, by BCP 47 tag; each has every part
    pt-BR:                   # the default parts have, and no other
      push_title: Boas-vindas, {{.name}}
      ...
`

func templatesCmd(ctx context.Context, client heraldv1.TemplateServiceClient, args []string, out io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(out, templatesUsage)
		return errors.New("no templates command")
	}
	switch args[0] {
	case "apply":
		return applyTemplates(ctx, client, args[1:], out)
	case "render":
		return renderTemplate(ctx, client, args[1:], out)
	case "help", "-h", "--help":
		fmt.Fprint(out, templatesUsage)
		return nil
	}
	fmt.Fprint(out, templatesUsage)
	return fmt.Errorf("unknown templates command %q", args[0])
}

// templateFile is one template as a YAML file holds it.
type templateFile struct {
	Name        string               `yaml:"name"`
	Description string               `yaml:"description"`
	Parts       partsFile            `yaml:"parts"`
	Locales     map[string]partsFile `yaml:"locales"`
}

type partsFile struct {
	PushTitle    string `yaml:"push_title"`
	PushBody     string `yaml:"push_body"`
	SMSBody      string `yaml:"sms_body"`
	EmailSubject string `yaml:"email_subject"`
	EmailHTML    string `yaml:"email_html"`
	EmailText    string `yaml:"email_text"`
}

// loaded is a template file, checked and turned into the API's form.
type loaded struct {
	file     string
	template *heraldv1.Template
	// locales maps the canonical tags of the request's translations back to the file's keys,
	// to name the file's fields in errors.
	locales []string
}

func applyTemplates(ctx context.Context, client heraldv1.TemplateServiceClient, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("templates apply", flag.ContinueOnError)
	dir := fs.String("f", "", "directory of template files (*.yaml, *.yml)")
	dryRun := fs.Bool("dry-run", false, "only say what would be created")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || fs.NArg() > 0 {
		return errors.New("usage: heraldctl templates apply -f DIR [--dry-run]")
	}
	list, err := loadTemplates(*dir)
	if err != nil {
		return err
	}
	// Every file is checked before anything is created, so a bad file changes nothing.
	for _, l := range list {
		latest, err := client.GetTemplate(ctx, &heraldv1.GetTemplateRequest{Name: l.template.Name})
		switch {
		case status.Code(err) == codes.NotFound:
		case err != nil:
			return fmt.Errorf("%s: %w", l.file, err)
		case sameContent(latest.Template, l.template):
			fmt.Fprintf(out, "%s: unchanged (v%d)\n", l.template.Name, latest.Template.Version)
			continue
		}
		if *dryRun {
			fmt.Fprintf(out, "%s: would create a new version\n", l.template.Name)
			continue
		}
		res, err := client.CreateTemplate(ctx, &heraldv1.CreateTemplateRequest{Template: l.template})
		if err != nil {
			return l.explain(err)
		}
		fmt.Fprintf(out, "%s: created v%d\n", res.Template.Name, res.Template.Version)
	}
	return nil
}

// loadTemplates reads and checks every template file in dir, in name order.
func loadTemplates(dir string) ([]loaded, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var list []loaded
	byName := map[string]string{}
	for _, e := range entries {
		if e.IsDir() || (filepath.Ext(e.Name()) != ".yaml" && filepath.Ext(e.Name()) != ".yml") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		l, err := loadTemplate(path)
		if err != nil {
			return nil, err
		}
		if prev, dup := byName[l.template.Name]; dup {
			return nil, fmt.Errorf("%s: name: template %q is also in %s", path, l.template.Name, prev)
		}
		byName[l.template.Name] = path
		list = append(list, l)
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("%s: no *.yaml or *.yml files", dir)
	}
	return list, nil
}

// loadTemplate decodes one file strictly (unknown fields, repeated keys and further documents
// are errors) and checks its parts as the server will, so that errors name the file's fields.
func loadTemplate(path string) (loaded, error) {
	f, err := os.Open(path)
	if err != nil {
		return loaded{file: path}, err
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxTemplateFile+1))
	if err != nil {
		return loaded{file: path}, err
	}
	if len(raw) > maxTemplateFile {
		return loaded{file: path}, fmt.Errorf("%s: larger than %d bytes, more than the server takes in one call", path, maxTemplateFile)
	}
	return decodeTemplate(path, raw)
}

// maxTemplateFile bounds a template file: no larger one could be sent in one call.
const maxTemplateFile = server.MaxMessageSize

// decodeTemplate is loadTemplate on the file's contents.
func decodeTemplate(path string, raw []byte) (loaded, error) {
	l := loaded{file: path}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	var f templateFile
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return l, fmt.Errorf("%s: the file is empty", path)
		}
		return l, fmt.Errorf("%s: %w", path, err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return l, fmt.Errorf("%s: holds more than one YAML document; put one template in each file", path)
	}
	if f.Name == "" {
		return l, fmt.Errorf("%s: name: is required", path)
	}

	t := &heraldv1.Template{Name: f.Name, Description: f.Description, Parts: f.Parts.proto()}
	var translations []templates.Translation
	keys := map[string]string{} // canonical tag -> the file's key
	for key, p := range f.Locales {
		tag, err := templates.CanonicalLocale(key)
		if err != nil {
			return l, fmt.Errorf("%s: locales.%s: %v", path, key, err)
		}
		if other, dup := keys[tag]; dup {
			first, second := min(key, other), max(key, other)
			return l, fmt.Errorf("%s: locales.%s: is the same locale as %s", path, second, first)
		}
		keys[tag] = key
		translations = append(translations, templates.Translation{Locale: tag, Parts: p.parts()})
	}
	slices.SortFunc(translations, func(a, b templates.Translation) int { return cmp.Compare(a.Locale, b.Locale) })
	set, err := templates.ParseSet(f.Parts.parts(), translations)
	if err == nil {
		err = set.CheckStatic(templates.Limits{})
	}
	if err != nil {
		var te *templates.Error
		if errors.As(err, &te) {
			field := "parts." + te.Part
			if te.Locale != "" {
				field = "locales." + keys[te.Locale] + "." + te.Part
			}
			return l, fmt.Errorf("%s: %s: %v", path, field, te.Err)
		}
		return l, fmt.Errorf("%s: %w", path, err)
	}
	for _, tr := range translations {
		t.Locales = append(t.Locales, &heraldv1.LocalizedParts{Locale: tr.Locale, Parts: partsFile(tr.Parts).proto()})
		l.locales = append(l.locales, keys[tr.Locale])
	}
	l.template = t
	return l, nil
}

func (p partsFile) parts() templates.Parts { return templates.Parts(p) }

func (p partsFile) proto() *heraldv1.TemplateParts {
	return &heraldv1.TemplateParts{PushTitle: p.PushTitle, PushBody: p.PushBody, SmsBody: p.SMSBody,
		EmailSubject: p.EmailSubject, EmailHtml: p.EmailHTML, EmailText: p.EmailText}
}

// sameContent reports whether the stored version has the content of the file: description,
// parts and translations (the server keeps canonical tags, sorted, as loadTemplate sends them).
func sameContent(stored, want *heraldv1.Template) bool {
	s := proto.Clone(stored).(*heraldv1.Template)
	s.Version, s.CreateTime = 0, nil
	return proto.Equal(s, want)
}

// requestLocale matches a field path the server names in a translation.
var requestLocale = regexp.MustCompile(`^locales\[(\d+)\](?:\.parts)?`)

// explain turns the server's answer to a create into an error that names the file and, for
// field violations, the file's own field (parts.sms_body, locales.pt-BR.sms_body).
func (l loaded) explain(err error) error {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.InvalidArgument {
		return fmt.Errorf("%s: %w", l.file, err)
	}
	var lines []string
	for _, d := range st.Details() {
		br, ok := d.(*errdetails.BadRequest)
		if !ok {
			continue
		}
		for _, v := range br.FieldViolations {
			field := strings.TrimPrefix(v.Field, "template.")
			if m := requestLocale.FindStringSubmatch(field); m != nil {
				if i, err := strconv.Atoi(m[1]); err == nil && i < len(l.locales) {
					field = "locales." + l.locales[i] + field[len(m[0]):]
				}
			}
			lines = append(lines, fmt.Sprintf("%s: %s: %s", l.file, field, v.Description))
		}
	}
	if len(lines) == 0 {
		return fmt.Errorf("%s: %s", l.file, st.Message())
	}
	return errors.New(strings.Join(lines, "\n"))
}

func renderTemplate(ctx context.Context, client heraldv1.TemplateServiceClient, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("templates render", flag.ContinueOnError)
	version := fs.Int("version", 0, "template version (default the latest)")
	locale := fs.String("locale", "", "the recipient's locale, e.g. pt-BR (default the default parts)")
	data := fs.String("data", "", "sample data as a JSON object")
	// The name may come before or after the flags.
	if err := fs.Parse(args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) > 0 {
		if err := fs.Parse(rest[1:]); err != nil {
			return err
		}
	}
	if len(rest) == 0 || fs.NArg() > 0 {
		return errors.New("usage: heraldctl templates render NAME [--version N] [--locale L] [--data JSON]")
	}
	req := &heraldv1.RenderTemplateRequest{Name: rest[0], Locale: *locale}
	if *version != 0 {
		req.Version = proto.Int32(int32(*version))
	}
	if *data != "" {
		var m map[string]any
		if err := json.Unmarshal([]byte(*data), &m); err != nil {
			return fmt.Errorf("--data: %w", err)
		}
		s, err := structpb.NewStruct(m)
		if err != nil {
			return fmt.Errorf("--data: %w", err)
		}
		req.Data = s
	}
	res, err := client.RenderTemplate(ctx, req)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s v%d, %s\n", req.Name, res.Version, cmp.Or(res.Locale, "default parts"))
	c := res.Content
	for _, p := range []struct{ name, text string }{
		{"push_title", c.PushTitle}, {"push_body", c.PushBody}, {"sms_body", c.SmsBody},
		{"email_subject", c.EmailSubject}, {"email_html", c.EmailHtml}, {"email_text", c.EmailText},
	} {
		if p.text == "" {
			continue
		}
		note := ""
		if p.name == "sms_body" {
			note = fmt.Sprintf(" (%s, %d segment%s)", res.SmsEncoding, res.SmsSegments, plural(res.SmsSegments))
		}
		fmt.Fprintf(out, "-- %s%s --\n%s\n", p.name, note, strings.TrimSuffix(p.text, "\n"))
	}
	return nil
}

func plural(n int32) string {
	if n == 1 {
		return ""
	}
	return "s"
}
