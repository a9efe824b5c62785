// This program is the in-app inbox example: a stand-in for an app's backend that serves one
// page with a bell (the unread count, live), the user's messages, and click to mark read. The
// page gets a user token from this server's /token, which asks Herald for it with the app key,
// and then talks to Herald directly. Against the stack of make run:
//
//	set -a; . .herald/dev.env; set +a
//	go run ./examples/inbox -user ada -addr 127.0.0.1:8090
//
// then open http://127.0.0.1:8090 and send to ada's inbox (README, "In-app inbox"). It reads
// the notifier's HTTP address and the app key from HERALD_HTTP_URL and HERALD_API_KEY.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/heraldhq/herald/examples/inbox/app"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8090", "address to serve the page on")
	user := flag.String("user", "ada", "the signed-in user (a real app takes it from its session)")
	flag.Parse()
	heraldURL, key := os.Getenv("HERALD_HTTP_URL"), os.Getenv("HERALD_API_KEY")
	if heraldURL == "" || key == "" {
		fmt.Fprintln(os.Stderr, "set HERALD_HTTP_URL and HERALD_API_KEY (set -a; . .herald/dev.env; set +a)")
		os.Exit(2)
	}
	srv := &http.Server{Addr: *addr, Handler: app.New(app.Config{HeraldURL: heraldURL, AppKey: key, User: *user}),
		ReadHeaderTimeout: 10 * time.Second}
	fmt.Printf("inbox of %s at http://%s\n", *user, *addr)
	log.Fatal(srv.ListenAndServe())
}
