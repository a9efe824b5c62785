package templates

import (
	"errors"
	"slices"
	"strings"

	"golang.org/x/text/language"
)

// PartLocale is Error.Part for a problem with a translation's locale tag itself.
const PartLocale = "locale"

// MaxLocaleLen is the longest locale tag accepted, in bytes: RFC 5646 asks implementations to
// support tags of at least 35 characters, and every tag in use is far shorter.
const MaxLocaleLen = 35

var (
	errLocale          = errors.New("must be a BCP 47 language tag such as pt-BR")
	errDuplicateLocale = errors.New("repeats a locale given before (tags are compared case-insensitively, in canonical form)")
	errMissingPart     = errors.New("is required: the default parts have it, and every translation must be complete")
	errExtraPart       = errors.New("must be empty: the default parts do not have it")
)

// Translation is a template's parts in one locale.
type Translation struct {
	Locale string // a BCP 47 tag, e.g. "pt-BR"
	Parts  Parts
}

// CanonicalLocale returns tag in canonical BCP 47 form ("pt-br" and "PT_br" become "pt-BR",
// deprecated codes become their replacements), so that tags compare case-insensitively. It
// returns an error for "" and for a tag that does not parse, is longer than MaxLocaleLen, or
// names no language ("und", private use only).
func CanonicalLocale(tag string) (string, error) {
	if len(tag) > MaxLocaleLen {
		return "", errLocale
	}
	t, err := language.Parse(tag)
	if err != nil {
		return "", errLocale
	}
	s := t.String()
	if s == "und" || strings.HasPrefix(s, "und-") || strings.HasPrefix(s, "x-") {
		return "", errLocale
	}
	return s, nil
}

// parentLocale drops the last subtag of a canonical tag: "zh-Hant-TW" -> "zh-Hant" -> "zh" -> "".
func parentLocale(tag string) string {
	i := strings.LastIndexByte(tag, '-')
	if i < 0 {
		return ""
	}
	return tag[:i]
}

// Set is a template version ready to render: its default parts and its translations, parsed.
// It is safe for concurrent use.
//
// Every translation is complete: it has exactly the parts the default has, checked by ParseSet,
// so a recipient never gets a message that mixes two languages, and the channels a template
// serves do not depend on the recipient's locale.
type Set struct {
	def     *Template
	locales map[string]*Template // by canonical tag
}

// ParseSet parses the default parts and every translation (see Parse). Besides Parse's errors
// it returns an *Error with Locale set to the translation's tag as given: Part PartLocale for a
// tag that CanonicalLocale refuses or that repeats an earlier one, or the name of a part that
// the translation lacks while the default has it, or has while the default does not.
func ParseSet(def Parts, translations []Translation) (*Set, error) {
	d, err := Parse(def)
	if err != nil {
		return nil, err
	}
	s := &Set{def: d, locales: make(map[string]*Template, len(translations))}
	defFields := def.fields()
	for _, tr := range translations {
		tag, err := CanonicalLocale(tr.Locale)
		if err != nil {
			return nil, &Error{Locale: tr.Locale, Part: PartLocale, Err: err}
		}
		if _, dup := s.locales[tag]; dup {
			return nil, &Error{Locale: tr.Locale, Part: PartLocale, Err: errDuplicateLocale}
		}
		for i, src := range tr.Parts.fields() {
			switch has, want := present(*src), present(*defFields[i]); {
			case want && !has:
				return nil, &Error{Locale: tr.Locale, Part: partNames[i], Err: errMissingPart}
			case has && !want:
				return nil, &Error{Locale: tr.Locale, Part: partNames[i], Err: errExtraPart}
			}
		}
		t, err := Parse(tr.Parts)
		if err != nil {
			if e, ok := err.(*Error); ok {
				e.Locale = tr.Locale
			}
			return nil, err
		}
		s.locales[tag] = t
	}
	return s, nil
}

// Default returns the template of the default parts.
func (s *Set) Default() *Template { return s.def }

// Locales returns the canonical tags of the translations, sorted.
func (s *Set) Locales() []string {
	out := make([]string, 0, len(s.locales))
	for tag := range s.locales {
		out = append(out, tag)
	}
	slices.Sort(out)
	return out
}

// Resolve picks the parts for a recipient in locale: the translation for the locale's canonical
// form, else for each shorter tag made by dropping the last subtag ("pt-BR" -> "pt"), else the
// default. It returns the tag of the translation chosen, "" for the default. A locale that
// CanonicalLocale refuses, or "", gets the default; a translation is never picked for a more
// general locale than its own ("pt" does not get "pt-BR").
func (s *Set) Resolve(locale string) (string, *Template) {
	tag, err := CanonicalLocale(locale)
	if err != nil {
		return "", s.def
	}
	for ; tag != ""; tag = parentLocale(tag) {
		if t, ok := s.locales[tag]; ok {
			return tag, t
		}
	}
	return "", s.def
}

// Render resolves locale (see Resolve) and renders that template with data (see
// Template.Render). It returns the tag of the translation used ("" for the default); an *Error
// from a translation has Locale set to its tag.
func (s *Set) Render(locale string, data map[string]any) (string, Rendered, error) {
	tag, t := s.Resolve(locale)
	r, err := t.Render(data)
	if err != nil {
		if e, ok := err.(*Error); ok {
			e.Locale = tag
		}
		return tag, Rendered{}, err
	}
	return tag, r, nil
}

// CheckStatic checks, for the default parts and each translation, what can be known before any
// render: the parts without actions render the same text every time, so they are rendered and
// checked against l as if the other parts rendered empty and data were empty. The output only
// grows with those, so what fails here would fail every render. It returns Check's errors,
// with Locale set for a translation.
func (s *Set) CheckStatic(l Limits) error {
	if err := s.def.checkStatic(l); err != nil {
		return err
	}
	for _, tag := range s.Locales() {
		if err := s.locales[tag].checkStatic(l); err != nil {
			if e, ok := err.(*Error); ok {
				e.Locale = tag
			}
			return err
		}
	}
	return nil
}

func (t *Template) checkStatic(l Limits) error {
	var r Rendered
	out := r.fields()
	for i, ex := range t.exec {
		if ex == nil || !t.static[i] {
			continue
		}
		s, err := execute(ex, nil)
		if err == nil && i == subjectIndex {
			err = singleLine(s)
		}
		if err != nil {
			return &Error{Part: partNames[i], Err: err}
		}
		*out[i] = s
	}
	return Check(r, nil, l)
}
