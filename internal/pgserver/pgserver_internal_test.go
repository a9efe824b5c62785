package pgserver

import (
	"context"
	"net"
	"os"
	"testing"
	"time"
)

// A port picked for Port 0 can be taken before postgres binds it; Start then picks another.
func TestStartPicksAnotherPortWhenTaken(t *testing.T) {
	if err := Available(); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port
	picks := 0
	pickPort = func() (int, error) {
		picks++
		if picks == 1 {
			return taken, nil
		}
		return freePort()
	}
	t.Cleanup(func() { pickPort = freePort })

	dir, err := os.MkdirTemp("", "herald-pgserver-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	s, err := Start(ctx, Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	if picks != 2 || s.Port() == taken {
		t.Errorf("picked %d ports, serving on %d (%d was taken)", picks, s.Port(), taken)
	}
}
