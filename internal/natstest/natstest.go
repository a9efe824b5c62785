// Package natstest starts a real in-process NATS JetStream server for tests, on a free loopback
// port with its store in a temp dir.
package natstest

import (
	"os"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/heraldhq/herald/internal/natsembed"
)

// Start returns a running JetStream server that is shut down when the test ends. Its ClientURL
// is what services connect to.
func Start(t testing.TB) *server.Server {
	t.Helper()
	dir, err := os.MkdirTemp("", "herald-nats-")
	if err != nil {
		t.Fatal(err)
	}
	s, err := natsembed.Start(natsembed.Config{Dir: dir, Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
		os.RemoveAll(dir)
	})
	return s
}
