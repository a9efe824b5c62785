// Package natstest starts a real in-process NATS JetStream server for tests, on a free loopback
// port with its store in a temp dir.
package natstest

import (
	"os"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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

// JetStream starts a server (see Start) and returns a JetStream client connected to it; both
// end with the test.
func JetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	return Connect(t, Start(t).ClientURL())
}

// Connect returns a JetStream client of the server at url, closed when the test ends.
func Connect(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
