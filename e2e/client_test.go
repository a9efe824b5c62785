package e2e

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/heraldhq/herald"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

var buildExample = build("github.com/heraldhq/herald/examples/go")

// TestGoClient sends with the Go client, as an app would, and runs the example program that
// uses it, both against one stack.
func TestGoClient(t *testing.T) {
	s := startStack(t, stackOptions{})

	t.Run("send and wait", func(t *testing.T) {
		c, err := herald.NewClient(s.notifier.GRPCAddr(), s.key, herald.WithContactsAddr(s.contacts.GRPCAddr()))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()

		req := emailRequest("ada@example.com")
		res, err := c.Send(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if res.Duplicate || req.IdempotencyKey != "" {
			t.Errorf("first Send: Duplicate %v, the caller's key became %q", res.Duplicate, req.IdempotencyKey)
		}
		n, err := c.WaitForNotification(ctx, res.NotificationId)
		if err != nil {
			t.Fatal(err)
		}
		if len(n.Deliveries) != 1 || n.Deliveries[0].State != heraldv1.DeliveryState_DELIVERY_STATE_SENT {
			t.Fatalf("deliveries %v, want one SENT", n.Deliveries)
		}
		if n.IdempotencyKey == "" {
			t.Fatal("the client sent no idempotency key")
		}

		again := proto.CloneOf(req)
		again.IdempotencyKey = n.IdempotencyKey
		dup, err := c.Send(ctx, again)
		if err != nil {
			t.Fatal(err)
		}
		if !dup.Duplicate || dup.NotificationId != res.NotificationId {
			t.Errorf("a repeat with the same key answered %v, want duplicate of %s", dup, res.NotificationId)
		}
		if got := len(s.fake.Messages()); got != 1 {
			t.Errorf("the provider received %d messages, want 1", got)
		}

		// Reaches the contacts service (the notifier would answer UNIMPLEMENTED).
		_, err = c.Contacts().GetUser(ctx, &heraldv1.GetUserRequest{UserId: "nobody"})
		if status.Code(err) != codes.NotFound {
			t.Errorf("Contacts().GetUser of an unknown user: %v, want NOT_FOUND", err)
		}
	})

	t.Run("example program", func(t *testing.T) {
		bin, err := buildExample()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-email", "grace@example.com", "-subject", "Hello", "-body", "From the example")
		cmd.Env = append(os.Environ(), "HERALD_NOTIFIER_ADDR="+s.notifier.GRPCAddr(), "HERALD_API_KEY="+s.key)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("the example: %v\n%s", err, out)
		}
		if !regexp.MustCompile(`(?m)\Anotification \S+\nemail\tsent\t\n\z`).Match(out) {
			t.Errorf("the example printed %q, want the notification id and its email delivery sent", out)
		}
	})
}
