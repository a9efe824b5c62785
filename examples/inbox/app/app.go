// Package app is the backend of the in-app inbox example: what an app's own server does so
// that its pages can show a user's Herald inbox. It serves the page, and /token, which asks
// Herald for a short-lived user token with the app key. The app key stays on the server; the
// browser gets only the user's token, and calls Herald's inbox routes and live feed with it
// directly (Herald answers CORS for them).
package app

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

//go:embed page.html
var files embed.FS

// Config is the backend's configuration.
type Config struct {
	// HeraldURL is the notifier's HTTP address as the browser reaches it, e.g.
	// http://127.0.0.1:7480.
	HeraldURL string
	// AppKey is the app's Herald key (hk_...): a secret of this server's, never sent to a page.
	AppKey string
	// User stands in for the signed-in user: a real app takes it from its session.
	User string
	// Client calls Herald; nil means a client with a 10 s timeout.
	Client *http.Client
}

// New returns the backend's handler: GET / (the page) and POST /token.
func New(cfg Config) http.Handler {
	cfg.HeraldURL = strings.TrimSuffix(cfg.HeraldURL, "/")
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	page, _ := files.ReadFile("page.html")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(page)
	})
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		tok, err := userToken(r, cfg)
		if err != nil {
			http.Error(w, "could not get an inbox token", http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(map[string]string{"token": tok, "herald": cfg.HeraldURL})
	})
	return mux
}

// userToken asks Herald for a token for cfg.User: POST /v1/inbox/tokens with the app key.
func userToken(r *http.Request, cfg Config) (string, error) {
	body, _ := json.Marshal(map[string]string{"user_id": cfg.User})
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, cfg.HeraldURL+"/v1/inbox/tokens", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+cfg.AppKey)
	req.Header.Set("Content-Type", "application/json")
	res, err := cfg.Client.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 1<<16))
	if err != nil {
		return "", err
	}
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("herald answered %s", res.Status)
	}
	var out struct{ Token string }
	if err := json.Unmarshal(b, &out); err != nil || out.Token == "" {
		return "", fmt.Errorf("herald's answer has no token")
	}
	return out.Token, nil
}
