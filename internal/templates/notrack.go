package templates

import "strings"

// NoTrackMark follows a URL that the template opted out of link tracking with the notrack
// function: {{notrack "https://example.com/"}}, or {{notrack .url}}. It is a private-use
// character that no channel shows; the notifier's link rewriting leaves the URL before it as
// it is and removes every mark, and html/template keeps it (percent-encoded inside an href).
// Check does not count it.
const NoTrackMark = "\uE000"

// linkFuncs are the functions templates may call besides text/template's builtins.
var linkFuncs = map[string]any{
	"notrack": func(u string) string { return u + NoTrackMark },
}

func unmark(s string) string {
	if !strings.Contains(s, NoTrackMark) {
		return s
	}
	return strings.ReplaceAll(s, NoTrackMark, "")
}
