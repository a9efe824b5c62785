package web

import (
	"bytes"
	"embed"
	"html/template"
	"net/http"
)

//go:embed templates/*.html
var templateFiles embed.FS

// pages are the templates, each the layout with one page's content.
var pages = func() map[string]*template.Template {
	base := template.Must(template.New("").Funcs(template.FuncMap{
		"style": func() template.CSS { return template.CSS(styleSheet) },
	}).ParseFS(templateFiles, "templates/layout.html"))
	out := map[string]*template.Template{}
	for _, name := range []string{"message", "preferences", "unsubscribe"} {
		out[name] = template.Must(template.Must(base.Clone()).ParseFS(templateFiles, "templates/"+name+".html"))
	}
	return out
}()

// render answers with a page. Data must have a Title.
func (h *Handler) render(w http.ResponseWriter, status int, page string, data any) {
	var buf bytes.Buffer
	if err := pages[page].ExecuteTemplate(&buf, "layout", data); err != nil {
		h.log.Error("web: render page", "page", page, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	setPageHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// message is a page that only says something.
type message struct {
	Title      string
	Heading    string
	Paragraphs []string
}

func (h *Handler) message(w http.ResponseWriter, status int, m message) {
	h.render(w, status, "message", m)
}

// The messages for links that cannot be used. They never say which part of a link was wrong.
var (
	msgIncomplete = message{
		Title:   "Incomplete link",
		Heading: "This link is incomplete",
		Paragraphs: []string{"Open the whole link from your message. If it was split across two lines, " +
			"copy all of it into the address bar."},
	}
	msgInvalidLink = message{
		Title:   "Link not valid",
		Heading: "This link is not valid or has expired",
		Paragraphs: []string{"Open the link in the most recent message we sent you, " +
			"or ask for a new one where you found this link."},
	}
	msgBadForm = message{
		Title:      "Bad request",
		Heading:    "This form could not be read",
		Paragraphs: []string{"Nothing was changed. Open the link again and retry."},
	}
	msgOff = message{
		Title:      "Not available",
		Heading:    "This page is not available",
		Paragraphs: []string{"Links to this page are turned off."},
	}
	msgUnavailable = message{
		Title:      "Try again later",
		Heading:    "We can't do this right now",
		Paragraphs: []string{"Please try again in a few minutes."},
	}
	msgInternal = message{
		Title:      "Something went wrong",
		Heading:    "Something went wrong on our side",
		Paragraphs: []string{"Please try again in a few minutes."},
	}
)
