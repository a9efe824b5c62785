package templates

import (
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io"
	"strings"
	"text/template"
	"text/template/parse"
	"unicode/utf8"
)

// The names of the parts, in snake_case as the API's fields are named; Error.Part is one of them.
const (
	PartPushTitle    = "push_title"
	PartPushBody     = "push_body"
	PartSMSBody      = "sms_body"
	PartEmailSubject = "email_subject"
	PartEmailHTML    = "email_html"
	PartEmailText    = "email_text"

	// PartData is Error.Part when the data, not a part, breaks a limit (see CheckPush).
	PartData = "data"
)

// Limits on one part of a template; see the package comment for how they bound rendering.
const (
	MaxSourceSize = 64 << 10  // bytes of template source
	MaxOutputSize = 256 << 10 // bytes of rendered text
	MaxWork       = 100_000   // units of range work (16 + body nodes per iteration) per render
	MaxBuilt      = 1 << 20   // bytes built by printf and its kin per render
)

// Errors a part can fail with, wrapped in an *Error.
var (
	ErrSourceTooLarge = fmt.Errorf("template is larger than %d bytes", MaxSourceSize)
	ErrOutputTooLarge = fmt.Errorf("rendered text is larger than %d bytes", MaxOutputSize)
	ErrTooMuchWork    = errors.New("template takes too much work to render")

	errNotUTF8      = errors.New("template is not valid UTF-8")
	errSourceNUL    = errors.New("template contains a NUL character")
	errDefine       = errors.New("{{define}}, {{block}} and {{template}} are not supported")
	errHTMLEscaper  = errors.New("must not use html, js or urlquery: HTML escapes data by itself")
	errSubjectLines = errors.New("must be a single line")
	errRenderedUTF8 = errors.New("rendered text is not valid UTF-8")
	errRenderedNUL  = errors.New("rendered text contains a NUL character")
	errSubjectCtl   = errors.New("must render to a single line without control characters")
)

// Error is a problem with one part of a template, found by Parse, ParseSet, Render or Check.
type Error struct {
	// Locale is the tag of the translation at fault, "" for the default parts.
	Locale string
	Part   string // which part, e.g. "email_html" (the Part* constants)
	Err    error
}

// Error returns the locale, the part's name and the problem.
func (e *Error) Error() string {
	if e.Locale != "" {
		return "locales[" + e.Locale + "]." + e.Part + ": " + e.Err.Error()
	}
	return e.Part + ": " + e.Err.Error()
}

// Unwrap returns the problem.
func (e *Error) Unwrap() error { return e.Err }

// Parts is the source of a template, one string per part. An empty or blank part is absent.
type Parts struct {
	PushTitle    string
	PushBody     string
	SMSBody      string
	EmailSubject string
	EmailHTML    string // an html/template; the others are text/templates
	EmailText    string
}

// PushReady reports whether the parts can make a push notification (they have a push body).
func (p Parts) PushReady() bool { return present(p.PushBody) }

// SMSReady reports whether the parts can make an SMS (they have an SMS body).
func (p Parts) SMSReady() bool { return present(p.SMSBody) }

// EmailReady reports whether the parts can make an email: a subject and an HTML or text body.
func (p Parts) EmailReady() bool {
	return present(p.EmailSubject) && (present(p.EmailHTML) || present(p.EmailText))
}

func present(s string) bool { return strings.TrimSpace(s) != "" }

// Rendered is a template rendered for one recipient; an absent part renders to "".
type Rendered struct {
	PushTitle    string
	PushBody     string
	SMSBody      string
	EmailSubject string
	EmailHTML    string
	EmailText    string
}

// partNames, Parts.fields and Rendered.fields list the parts in the same order.
var partNames = [...]string{PartPushTitle, PartPushBody, PartSMSBody, PartEmailSubject, PartEmailHTML, PartEmailText}

const (
	subjectIndex = 3
	htmlIndex    = 4
)

func (p *Parts) fields() [len(partNames)]*string {
	return [...]*string{&p.PushTitle, &p.PushBody, &p.SMSBody, &p.EmailSubject, &p.EmailHTML, &p.EmailText}
}

func (r *Rendered) fields() [len(partNames)]*string {
	return [...]*string{&r.PushTitle, &r.PushBody, &r.SMSBody, &r.EmailSubject, &r.EmailHTML, &r.EmailText}
}

// executor is what text/template and html/template have in common.
type executor interface {
	Execute(w io.Writer, data any) error
}

// Template is a parsed template, ready to render. It is safe for concurrent use.
type Template struct {
	parts  Parts
	exec   [len(partNames)]executor // nil for an absent part
	static [len(partNames)]bool     // the part has no actions: it renders its text as it is
}

// Parse parses and checks every present part of p. It returns an *Error naming the first part
// that is larger than MaxSourceSize (ErrSourceTooLarge), is not valid UTF-8 or holds NUL, does
// not parse, uses {{define}}, {{block}} or {{template}}, uses html, js or urlquery in
// email_html, cannot be escaped safely (an html/template error), or is a subject with a line
// break in its text.
func Parse(p Parts) (*Template, error) {
	t := &Template{parts: p}
	for i, src := range p.fields() {
		if !present(*src) {
			continue
		}
		ex, err := parsePart(i, *src)
		if err != nil {
			return nil, &Error{Part: partNames[i], Err: err}
		}
		t.exec[i], t.static[i] = ex, static(ex)
	}
	return t, nil
}

func parsePart(i int, src string) (executor, error) {
	if len(src) > MaxSourceSize {
		return nil, ErrSourceTooLarge
	}
	if !utf8.ValidString(src) {
		return nil, errNotUTF8
	}
	if strings.IndexByte(src, 0) >= 0 {
		// PostgreSQL cannot store it, and no channel wants it.
		return nil, errSourceNUL
	}
	name := partNames[i]
	if i == htmlIndex {
		h, err := htmltemplate.New(name).Option("missingkey=error").Funcs(linkFuncs).Parse(src)
		if err != nil {
			return nil, err
		}
		for _, d := range h.Templates() {
			if d.Name() != name {
				return nil, errDefine
			}
		}
		if h.Tree == nil {
			return nil, errDefine
		}
		if err := sandbox(h.Tree, true, false); err != nil {
			return nil, err
		}
		h.Funcs(htmlFuncs)
		// html/template escapes on the first execution; do it now so that a template that
		// cannot be escaped fails here rather than at every render. With nil data the run
		// stops at the first field; only escaping errors matter.
		err = h.Execute(&limitWriter{max: MaxOutputSize}, nil)
		var escErr *htmltemplate.Error
		if errors.As(err, &escErr) {
			return nil, err
		}
		return h, nil
	}
	t, err := template.New(name).Option("missingkey=error").Funcs(linkFuncs).Parse(src)
	if err != nil {
		return nil, err
	}
	for _, d := range t.Templates() {
		if d.Name() != name {
			return nil, errDefine
		}
	}
	if t.Tree == nil {
		return nil, errDefine
	}
	if err := sandbox(t.Tree, false, i == subjectIndex); err != nil {
		return nil, err
	}
	t.Funcs(textFuncs)
	return t, nil
}

// static reports whether a parsed part holds nothing but text and the sandbox's prelude.
func static(ex executor) bool {
	var tree *parse.Tree
	switch t := ex.(type) {
	case *template.Template:
		tree = t.Tree
	case *htmltemplate.Template:
		tree = t.Tree
	}
	if tree == nil || tree.Root == nil {
		return false
	}
	for i, n := range tree.Root.Nodes {
		if _, text := n.(*parse.TextNode); !text && i > 0 { // node 0 declares the budget
			return false
		}
	}
	return true
}

// Parts returns the source the template was parsed from, so a caller can ask which channels it
// serves (PushReady, SMSReady, EmailReady).
func (t *Template) Parts() Parts { return t.parts }

// Render renders every present part with data, the JSON object sent with a notification. It
// returns an *Error naming the first part that fails: a key the part names is missing from data,
// a value has the wrong type for its use, the output exceeds MaxOutputSize (ErrOutputTooLarge),
// rendering exceeds its budget (ErrTooMuchWork), the output is not valid UTF-8 or contains NUL,
// or the subject is not a single line. The error text quotes template source and type names,
// never string, list or object data.
func (t *Template) Render(data map[string]any) (Rendered, error) {
	var r Rendered
	out := r.fields()
	for i, ex := range t.exec {
		if ex == nil {
			continue
		}
		s, err := execute(ex, data)
		if err == nil && i == subjectIndex {
			err = singleLine(s)
		}
		if err != nil {
			return Rendered{}, &Error{Part: partNames[i], Err: err}
		}
		*out[i] = s
	}
	return r, nil
}

func execute(ex executor, data map[string]any) (string, error) {
	w := &limitWriter{max: MaxOutputSize}
	if err := ex.Execute(w, data); err != nil {
		// Drop the template context from the limit errors: where the limit struck is noise.
		for _, limit := range []error{ErrOutputTooLarge, ErrTooMuchWork} {
			if errors.Is(err, limit) {
				return "", limit
			}
		}
		// Hide the sandbox's extra argument from the error's quote of the action.
		if msg := err.Error(); strings.Contains(msg, " "+budgetVar) {
			return "", errors.New(strings.ReplaceAll(msg, " "+budgetVar, ""))
		}
		return "", err
	}
	s := w.b.String()
	if !utf8.ValidString(s) {
		// slice can cut a rune in two, and printf "%c" can make anything.
		return "", errRenderedUTF8
	}
	if strings.IndexByte(s, 0) >= 0 {
		// PostgreSQL text cannot hold NUL, and no channel wants it.
		return "", errRenderedNUL
	}
	return s, nil
}

// singleLine rejects a subject with a line break or other control character but tab, so that
// data cannot add mail headers.
func singleLine(s string) error {
	for _, r := range s {
		if r < ' ' && r != '\t' || r == 0x7f || r == 0x85 || r == '\u2028' || r == '\u2029' {
			return errSubjectCtl
		}
	}
	return nil
}

// limitWriter collects output and fails once more than max bytes are written.
type limitWriter struct {
	b   strings.Builder
	max int
}

func (w *limitWriter) Write(p []byte) (int, error) {
	if w.b.Len()+len(p) > w.max {
		return 0, ErrOutputTooLarge
	}
	return w.b.Write(p)
}
