package web

import (
	"context"
	"errors"
	"net/http"
	"slices"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/linktoken"
	"github.com/heraldhq/herald/internal/preference"
)

// unsubscribeTarget is what an unsubscribe link is for, once checked.
type unsubscribeTarget struct {
	claims linktoken.Claims
	// category is the category the link leaves; its zero value (no name) stands for all email.
	category preference.Category
	// known is false when the link names a category that no longer exists.
	known bool
}

// target checks what a verified unsubscribe token names: a user who exists, or an email
// address, and a category. It answers the request itself, and returns false, when it cannot
// be used.
func (h *Handler) target(w http.ResponseWriter, r *http.Request, c linktoken.Claims) (unsubscribeTarget, bool) {
	t := unsubscribeTarget{claims: c, category: preference.Category{Name: c.Category}, known: c.Category == ""}
	switch {
	case c.UserID != "":
		if _, err := h.svc.GetUser(r.Context(), c.UserID); err != nil {
			if unknownUser(err) {
				h.refuse(w)
			} else {
				h.fail(w, r, "load user", err)
			}
			return t, false
		}
	case c.Address != "" && (c.Channel == "" || c.Channel == string(delivery.Email)):
	default: // signed, but not for anything this page can act on
		h.refuse(w)
		return t, false
	}
	if c.Category == "" {
		return t, true
	}
	// The categories belong to the notifier; the contacts service has no call of its own for
	// them, so read them from the store the service reads them from.
	cats, err := h.svc.Store.Categories(r.Context())
	if err != nil {
		h.fail(w, r, "load categories", err)
		return t, false
	}
	if i := slices.IndexFunc(cats, func(k preference.Category) bool { return k.Name == c.Category }); i >= 0 {
		t.category, t.known = cats[i], true
	}
	if t.category.Critical {
		h.message(w, http.StatusConflict, msgCritical(t.category.Name))
		return t, false
	}
	return t, true
}

// confirmUnsubscribe serves GET /unsubscribe?token=...: a page with a button that posts the
// one-click form. It changes nothing, so mail scanners that follow links unsubscribe no one.
func (h *Handler) confirmUnsubscribe(w http.ResponseWriter, r *http.Request) {
	token := r.URL.Query().Get(fieldToken)
	c, ok := h.verify(w, token, linktoken.Unsubscribe)
	if !ok {
		return
	}
	t, ok := h.target(w, r, c)
	if !ok {
		return
	}
	p := unsubscribePage{Title: "Unsubscribe", Token: token,
		Heading: "Unsubscribe from all emails?",
		Text:    "You will stop getting emails from us, except messages that keep your account safe."}
	if name := t.category.Name; name != "" {
		p.Heading = "Unsubscribe from " + categoryTitle(name) + " emails?"
		p.Text = "You will stop getting " + categoryTitle(name) + " emails from us. Other emails are not affected."
	}
	h.render(w, http.StatusOK, "unsubscribe", p)
}

type unsubscribePage struct {
	Title, Heading, Text, Token string
}

// unsubscribe serves POST /unsubscribe?token=... with the body List-Unsubscribe=One-Click
// (RFC 8058): it opts the link's user or address out of the category's email and says so,
// with no redirect and no cookie. Repeating it changes nothing more.
func (h *Handler) unsubscribe(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	// RFC 8058 senders post multipart/form-data or application/x-www-form-urlencoded.
	if err := r.ParseMultipartForm(maxForm); err != nil && !errors.Is(err, http.ErrNotMultipart) {
		h.message(w, http.StatusBadRequest, msgBadForm)
		return
	}
	if r.MultipartForm != nil {
		defer r.MultipartForm.RemoveAll()
	}
	c, ok := h.verify(w, r.URL.Query().Get(fieldToken), linktoken.Unsubscribe)
	if !ok {
		return
	}
	if r.PostForm.Get("List-Unsubscribe") != "One-Click" {
		h.message(w, http.StatusBadRequest, msgBadForm)
		return
	}
	t, ok := h.target(w, r, c)
	if !ok {
		return
	}
	var err error
	if c.UserID != "" {
		err = h.optOutOfEmail(r.Context(), t)
	} else {
		err = h.svc.Suppress(r.Context(), preference.Suppression{
			Channel: delivery.Email, Address: c.Address, Category: c.Category, Reason: "unsubscribe"})
	}
	switch {
	case err == nil:
		h.message(w, http.StatusOK, msgUnsubscribed(t.category.Name))
	case c.UserID != "" && unknownUser(err): // deleted since target
		h.refuse(w)
	default:
		h.fail(w, r, "unsubscribe", err)
	}
}

// optOutOfEmail opts a user out of the target category's email, or out of email altogether
// when the link names no category. It changes the settings as they are when it writes them:
// a change made elsewhere since it read them makes it read them again, rather than undo that
// change.
func (h *Handler) optOutOfEmail(ctx context.Context, t unsubscribeTarget) error {
	if !t.known {
		// Nothing of a deleted category is sent any more, and settings cannot name it.
		h.log.WarnContext(ctx, "web: unsubscribe from a category that no longer exists", "category", t.category.Name)
		return nil
	}
	for attempt := 1; ; attempt++ {
		st, version, cats, err := h.svc.GetSettings(ctx, t.claims.UserID)
		if err != nil || !optOut(st, t.category.Name) {
			return err
		}
		clean(st, cats)
		_, err = h.svc.UpdateSettings(ctx, t.claims.UserID, st, version)
		if errs.KindOf(err) != errs.Aborted || attempt == maxOptOutAttempts {
			return err
		}
	}
}

// maxOptOutAttempts bounds how often an unsubscribe reads the settings again when they keep
// changing under it.
const maxOptOutAttempts = 5

// optOut opts st out of a category's email, or of email altogether for category "", and
// reports whether that changed st.
func optOut(st *preference.Settings, category string) bool {
	if category == "" {
		if slices.Contains(st.OptedOutChannels, delivery.Email) {
			return false
		}
		st.OptedOutChannels = append(st.OptedOutChannels, delivery.Email)
		return true
	}
	cs := st.Categories[category]
	if slices.Contains(cs.OptedOutChannels, delivery.Email) {
		return false
	}
	cs.OptedOutChannels = append(slices.Clone(cs.OptedOutChannels), delivery.Email)
	if st.Categories == nil {
		st.Categories = map[string]preference.CategorySetting{}
	}
	st.Categories[category] = cs
	return true
}

func msgUnsubscribed(category string) message {
	m := message{Title: "Unsubscribed", Heading: "You are unsubscribed",
		Paragraphs: []string{"You will not get emails from us any more, except messages that keep your account safe."}}
	if category != "" {
		m.Paragraphs = []string{"You will not get " + categoryTitle(category) + " emails from us any more."}
	}
	return m
}

func msgCritical(category string) message {
	return message{Title: "Cannot unsubscribe", Heading: "These emails can't be turned off",
		Paragraphs: []string{categoryTitle(category) + " emails keep your account safe, so everyone with an account gets them."}}
}
