package loopstack

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/services/workers/route"
)

// TestEmailBackup: the providers file AddEmailBackup writes is one the workers accept, listing
// the two SendGrid fakes in order, and the workers are pointed at it.
func TestEmailBackup(t *testing.T) {
	dir := t.TempDir()
	var recv Receiver
	recv.Cur.Store(NewTracker(time.Now()))
	p, err := StartProviders(dir, 0, &recv)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.AddEmailBackup(dir, 0, &recv); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "providers.yaml")
	if i := slices.Index(p.WorkerArgs, "--providers-file"); i < 0 || p.WorkerArgs[i+1] != file {
		t.Fatalf("worker args %q do not name the providers file", p.WorkerArgs)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	f, err := route.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	email := f.Channels[delivery.Email]
	if len(email) != 2 || email[0].Label() != "sendgrid/primary" || email[1].Label() != "sendgrid/backup" ||
		email[0].BaseURL != p.sendgridURL || email[1].BaseURL == p.sendgridURL {
		t.Errorf("email routes %+v", email)
	}
}
