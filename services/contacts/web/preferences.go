package web

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/linktoken"
	"github.com/heraldhq/herald/internal/preference"
	"github.com/heraldhq/herald/services/contacts"
)

// channelGroup is one channel switch on the page. Users think of push as one thing, so one
// switch stands for both iOS and Android.
type channelGroup struct {
	Key      string
	Label    string
	Channels []delivery.Channel
}

var channelGroups = []channelGroup{
	{"email", "Email", []delivery.Channel{delivery.Email}},
	{"push", "Push notifications", []delivery.Channel{delivery.IOS, delivery.Android}},
	{"sms", "Text messages (SMS)", []delivery.Channel{delivery.SMS}},
	{"inbox", "In-app inbox", []delivery.Channel{delivery.Inbox}},
}

// groupOn reports whether the page shows a group on: none of its channels is opted out.
func groupOn(optedOut []delivery.Channel, g channelGroup) bool {
	for _, ch := range g.Channels {
		if slices.Contains(optedOut, ch) {
			return false
		}
	}
	return true
}

// applyGroups returns optedOut changed only in the groups whose switch the form turned: a
// group the user left as shown keeps its channels as they were, even a mix (iOS off, Android
// on) that one switch cannot show.
func applyGroups(optedOut []delivery.Channel, on []string) []delivery.Channel {
	out := slices.Clone(optedOut)
	for _, g := range channelGroups {
		want := slices.Contains(on, g.Key)
		if want == groupOn(optedOut, g) {
			continue
		}
		out = slices.DeleteFunc(out, func(ch delivery.Channel) bool { return slices.Contains(g.Channels, ch) })
		if !want {
			out = append(out, g.Channels...)
		}
	}
	if len(out) == 0 {
		return nil
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// receives reports whether the page shows category c as received: the user's explicit choice,
// else the category's default.
func receives(cs preference.CategorySetting, c preference.Category) bool {
	if cs.OptedOut != nil {
		return !*cs.OptedOut
	}
	return c.DefaultOptIn
}

// clean drops what UpdateSettings would refuse and what cannot matter: choices for categories
// that no longer exist, and opt-outs of categories that have since become critical.
func clean(st *preference.Settings, cats []preference.Category) {
	for name, cs := range st.Categories {
		i := slices.IndexFunc(cats, func(c preference.Category) bool { return c.Name == name })
		if i < 0 || cats[i].Critical && ((cs.OptedOut != nil && *cs.OptedOut) || len(cs.OptedOutChannels) > 0) {
			delete(st.Categories, name)
		}
	}
}

// Form fields of the preference page.
const (
	fieldToken      = "token"
	fieldEtag       = "etag" // the version of the settings the page shows (contacts.Version.Etag)
	fieldPause      = "pause"
	fieldChannel    = "channel" // a channel group's key, once per group switched on
	fieldReceive    = "receive" // a category's name, once per category received
	fieldCatPrefix  = "cat:"    // "cat:<category>": a channel group's key, once per group on
	fieldQuietStart = "quiet_start"
	fieldQuietEnd   = "quiet_end"
)

// fromForm turns a submitted form into settings, starting from the stored ones: a switch left
// as the page showed it keeps the stored choice, so that a category the user never touched
// keeps following its default. It returns a problem to show the user when the form is not
// valid.
func fromForm(form url.Values, cur *preference.Settings, cats []preference.Category) (next *preference.Settings, problem string) {
	next = &preference.Settings{
		GlobalOptOut:     form.Get(fieldPause) != "",
		OptedOutChannels: applyGroups(cur.OptedOutChannels, form[fieldChannel]),
	}
	for _, c := range cats {
		cs := cur.Categories[c.Name]
		if !c.Critical { // a critical category's switches are shown on and disabled
			if want := slices.Contains(form[fieldReceive], c.Name); want != receives(cs, c) {
				optedOut := !want
				cs.OptedOut = &optedOut
			}
			cs.OptedOutChannels = applyGroups(cs.OptedOutChannels, form[fieldCatPrefix+c.Name])
		}
		if cs.OptedOut != nil || len(cs.OptedOutChannels) > 0 {
			if next.Categories == nil {
				next.Categories = map[string]preference.CategorySetting{}
			}
			next.Categories[c.Name] = cs
		}
	}
	clean(next, cats)
	next.QuietHours, problem = quietHours(form.Get(fieldQuietStart), form.Get(fieldQuietEnd))
	return next, problem
}

// quietHours reads the quiet hours fields: both empty for none.
func quietHours(start, end string) (*preference.QuietHours, string) {
	start, end = strings.TrimSpace(start), strings.TrimSpace(end)
	if start == "" && end == "" {
		return nil, ""
	}
	if start == "" || end == "" {
		return nil, "Quiet hours need both a start and an end time. Leave both empty for no quiet hours."
	}
	s, ok1 := clock(start)
	e, ok2 := clock(end)
	if !ok1 || !ok2 {
		return nil, "Quiet hours need times such as 22:00 and 07:00."
	}
	if s == e {
		return nil, "Quiet hours must start and end at different times."
	}
	return &preference.QuietHours{Start: s, End: e}, ""
}

// clock reads a time of day as a browser's time input sends it, HH:MM or HH:MM:SS, and
// returns it as HH:MM.
func clock(s string) (string, bool) {
	for _, layout := range []string{"15:04", "15:04:05"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.Format("15:04"), true
		}
	}
	return "", false
}

// switchView is one switch: a checkbox with its label.
type switchView struct {
	ID, Label, Name, Value, DescribedBy string
	On, Disabled                        bool
}

type categoryView struct {
	ID          string
	Title       string
	Description string
	Critical    bool
	Receive     switchView
	Channels    []switchView
}

type preferencesPage struct {
	Title        string
	Token        string
	Etag         string
	Saved        bool
	Error        string
	QuietInvalid bool
	Pause        switchView
	PauseHint    string
	Channels     []switchView
	Categories   []categoryView
	QuietStart   string
	QuietEnd     string
	Timezone     string
}

func preferencesView(token string, u *contacts.User, st *preference.Settings, version contacts.Version, cats []preference.Category) *preferencesPage {
	p := &preferencesPage{
		Title:    "Notification settings",
		Token:    token,
		Etag:     version.Etag(),
		Timezone: u.Timezone,
		Pause: switchView{ID: "pause", Label: "Pause all notifications", Name: fieldPause, Value: "on",
			On: st.GlobalOptOut, DescribedBy: "pause-hint"},
	}
	if q := st.QuietHours; q != nil {
		p.QuietStart, p.QuietEnd = q.Start, q.End
	}
	for _, g := range channelGroups {
		p.Channels = append(p.Channels, switchView{ID: "ch-" + g.Key, Label: g.Label, Name: fieldChannel, Value: g.Key,
			On: groupOn(st.OptedOutChannels, g), DescribedBy: "channels-hint"})
	}
	var always []string
	for i, c := range cats {
		cs := st.Categories[c.Name]
		v := categoryView{ID: fmt.Sprintf("cat-%d", i), Title: categoryTitle(c.Name), Description: c.Description, Critical: c.Critical}
		var described []string
		if c.Description != "" {
			described = append(described, v.ID+"-desc")
		}
		if c.Critical {
			described = append(described, v.ID+"-why")
			always = append(always, v.Title)
		}
		v.Receive = switchView{ID: v.ID, Label: "Receive " + v.Title, On: c.Critical || receives(cs, c),
			Disabled: c.Critical, DescribedBy: strings.Join(described, " ")}
		if !c.Critical {
			v.Receive.Name, v.Receive.Value = fieldReceive, c.Name
		}
		for _, g := range channelGroups {
			s := switchView{ID: v.ID + "-" + g.Key, Label: g.Label, On: c.Critical || groupOn(cs.OptedOutChannels, g), Disabled: c.Critical}
			if c.Critical {
				s.DescribedBy = v.ID + "-why"
			} else {
				s.Name, s.Value = fieldCatPrefix+c.Name, g.Key
			}
			v.Channels = append(v.Channels, s)
		}
		p.Categories = append(p.Categories, v)
	}
	p.PauseHint = "While paused, you get no notifications."
	if len(always) > 0 {
		p.PauseHint = "While paused, you get only messages that can't be turned off: " + strings.Join(always, ", ") + "."
	}
	return p
}

// stored is what the page shows: the token's user, their settings with their version, and the
// categories.
type stored struct {
	user     *contacts.User
	settings *preference.Settings
	version  contacts.Version
	cats     []preference.Category
}

func (s *stored) view(token string) *preferencesPage {
	return preferencesView(token, s.user, s.settings, s.version, s.cats)
}

// load reads the token's user and their settings, answering the request itself (and returning
// false) when it cannot.
func (h *Handler) load(w http.ResponseWriter, r *http.Request, userID string) (*stored, bool) {
	u, err := h.svc.GetUser(r.Context(), userID)
	if err == nil {
		s := &stored{user: u}
		if s.settings, s.version, s.cats, err = h.svc.GetSettings(r.Context(), userID); err == nil {
			return s, true
		}
	}
	if unknownUser(err) {
		h.refuse(w)
	} else {
		h.fail(w, r, "load settings", err)
	}
	return nil, false
}

// showPreferences serves GET /preferences?token=...: the user's settings as a form.
func (h *Handler) showPreferences(w http.ResponseWriter, r *http.Request) {
	token := r.URL.Query().Get(fieldToken)
	c, ok := h.verify(w, token, linktoken.Preferences)
	if !ok {
		return
	}
	cur, ok := h.load(w, r, c.UserID)
	if !ok {
		return
	}
	p := cur.view(token)
	p.Saved = r.URL.Query().Get("saved") == "1"
	h.render(w, http.StatusOK, "preferences", p)
}

// msgChangedElsewhere tells the user why their changes were not saved: the settings changed
// after the page was opened.
const msgChangedElsewhere = "Your settings were changed somewhere else (in another window, or by an unsubscribe link) " +
	"after you opened this page, so your changes were not saved. Here are your settings as they are now: " +
	"make your changes again and save."

// savePreferences serves POST /preferences: it saves the form and redirects to the page (303,
// so that reloading it does not post again), or shows the form again with what is wrong. The
// form carries the version of the settings it showed: when they have changed since, nothing is
// saved and the page shows them as they are now (409), so that a save never undoes a change
// the user did not see.
func (h *Handler) savePreferences(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if err := r.ParseForm(); err != nil {
		h.message(w, http.StatusBadRequest, msgBadForm)
		return
	}
	token := r.PostForm.Get(fieldToken)
	c, ok := h.verify(w, token, linktoken.Preferences)
	if !ok {
		return
	}
	shown, err := contacts.ParseEtag(fieldEtag, r.PostForm.Get(fieldEtag))
	if err != nil {
		h.message(w, http.StatusBadRequest, msgBadForm)
		return
	}
	cur, ok := h.load(w, r, c.UserID)
	if !ok {
		return
	}
	// A form without a version (from a page served before pages carried one) is taken as
	// showing the settings as they are now.
	if shown != contacts.AnyVersion && shown != cur.version {
		h.changedElsewhere(w, token, cur)
		return
	}
	// The form's switches are read against cur, so cur is what the update may replace.
	next, problem := fromForm(r.PostForm, cur.settings, cur.cats)
	quietInvalid := problem != ""
	if problem == "" {
		_, err := h.svc.UpdateSettings(r.Context(), c.UserID, next, cur.version)
		var e *errs.Error
		switch {
		case err == nil:
			// A relative Location keeps any path prefix a proxy adds in front of the page.
			w.Header().Set("Location", "preferences?saved=1&token="+url.QueryEscape(token))
			setPageHeaders(w)
			w.WriteHeader(http.StatusSeeOther)
			return
		case errs.KindOf(err) == errs.NotFound: // deleted since load
			h.refuse(w)
			return
		case errs.KindOf(err) == errs.Aborted: // changed since load
			if cur, ok = h.load(w, r, c.UserID); ok {
				h.changedElsewhere(w, token, cur)
			}
			return
		case errors.As(err, &e) && e.Kind == errs.Invalid && len(e.Fields) > 0:
			problem = "Your settings were not saved: " + e.Fields[0].Reason + "."
			quietInvalid = strings.HasPrefix(e.Fields[0].Field, "settings.quiet_hours")
		default:
			h.fail(w, r, "update settings", err)
			return
		}
	}
	p := preferencesView(token, cur.user, next, cur.version, cur.cats)
	p.Error = problem
	p.QuietStart, p.QuietEnd = r.PostForm.Get(fieldQuietStart), r.PostForm.Get(fieldQuietEnd)
	p.QuietInvalid = quietInvalid
	h.render(w, http.StatusUnprocessableEntity, "preferences", p)
}

// changedElsewhere answers a save whose form showed settings that have changed since: the
// page with the settings as they are now, and why nothing was saved.
func (h *Handler) changedElsewhere(w http.ResponseWriter, token string, cur *stored) {
	p := cur.view(token)
	p.Error = msgChangedElsewhere
	h.render(w, http.StatusConflict, "preferences", p)
}
