package inboxfeed

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

func TestCORS(t *testing.T) {
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	for _, tc := range []struct {
		name      string
		origins   []string
		method    string
		origin    string
		preflight bool
		code      int
		allow     string
	}{
		{"any origin", []string{"*"}, http.MethodGet, "https://a.example", false, http.StatusTeapot, "*"},
		{"listed origin", []string{"https://a.example"}, http.MethodGet, "https://a.example", false, http.StatusTeapot, "https://a.example"},
		{"other origin", []string{"https://a.example"}, http.MethodGet, "https://b.example", false, http.StatusTeapot, ""},
		{"no origin", []string{"*"}, http.MethodGet, "", false, http.StatusTeapot, ""},
		{"preflight", []string{"*"}, http.MethodOptions, "https://a.example", true, http.StatusNoContent, "*"},
		{"preflight of another origin", []string{"https://a.example"}, http.MethodOptions, "https://b.example", true, http.StatusNoContent, ""},
		{"plain OPTIONS", []string{"*"}, http.MethodOptions, "https://a.example", false, http.StatusTeapot, "*"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, "/v1/inbox/messages", nil)
			if tc.origin != "" {
				r.Header.Set("Origin", tc.origin)
			}
			if tc.preflight {
				r.Header.Set("Access-Control-Request-Method", "POST")
			}
			w := httptest.NewRecorder()
			CORS(tc.origins, next).ServeHTTP(w, r)
			if w.Code != tc.code || w.Header().Get("Access-Control-Allow-Origin") != tc.allow {
				t.Fatalf("%d, Allow-Origin %q; want %d, %q", w.Code, w.Header().Get("Access-Control-Allow-Origin"), tc.code, tc.allow)
			}
			if w.Header().Get("Access-Control-Allow-Credentials") != "" {
				t.Fatal("credentials allowed: the inbox takes bearer tokens only")
			}
		})
	}
}

// FuzzRequest: the feed's query (token, after) and Last-Event-ID header are outside input;
// reading them must never panic, and a position read is -1 (none) or a seq.
func FuzzRequest(f *testing.F) {
	f.Add("token=abc&after=3", "")
	f.Add("after=-1", "7")
	f.Add("token=%zz", "x")
	f.Add("", "18446744073709551616")
	f.Fuzz(func(t *testing.T, query, lastID string) {
		r := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/v1/inbox/feed", RawQuery: query}, Header: http.Header{}}
		r.Header.Set("Last-Event-ID", lastID)
		_ = TokenFrom(r)
		pos, err := Position(r)
		if err == nil && pos < -1 {
			t.Fatalf("Position = %d", pos)
		}
	})
}
