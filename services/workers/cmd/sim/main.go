// Command sim runs the provider simulator on its own, for development clusters: workers whose
// providers are "sim" send to it, and it shows what it "delivered" (JSON at /v1/messages, a page
// at /). `make run` runs the same simulator in-process.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/heraldhq/herald/internal/cli"
	"github.com/heraldhq/herald/services/workers/sim"
)

func main() {
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:7490", "listen address")
	if err := cli.Parse(fs, os.Args[1:]); err != nil {
		os.Exit(2)
	}
	ctx, stop := cli.SignalContext()
	defer stop()
	srv := &http.Server{Addr: *addr, Handler: sim.NewServer(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	fmt.Fprintln(os.Stderr, "simulator listening on", *addr)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "sim:", err)
		os.Exit(1)
	}
}
