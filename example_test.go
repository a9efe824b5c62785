package herald_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/heraldhq/herald"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

// Send an email, wait until it is sent, and show what became of each delivery. The stack that
// make run starts writes the address and the key to .herald/dev.env.
func Example() {
	c, err := herald.NewClient(os.Getenv("HERALD_NOTIFIER_ADDR"), os.Getenv("HERALD_API_KEY"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	res, err := c.Send(ctx, &heraldv1.SendRequest{
		Recipient: &heraldv1.Recipient{Kind: &heraldv1.Recipient_Address{Address: &heraldv1.Address{Email: "ada@example.com"}}},
		Category:  "account",
		Message:   &heraldv1.SendRequest_Content{Content: &heraldv1.Content{Subject: "Hello", Body: "It works"}},
	})
	if st, ok := status.FromError(err); ok && st.Code() == codes.InvalidArgument {
		for _, d := range st.Details() {
			if br, ok := d.(*errdetails.BadRequest); ok {
				for _, v := range br.FieldViolations {
					log.Printf("%s: %s", v.Field, v.Description)
				}
			}
		}
		os.Exit(1)
	}
	if err != nil {
		log.Fatal(err)
	}
	n, err := c.WaitForNotification(ctx, res.NotificationId)
	if err != nil {
		log.Printf("waiting: %v", err) // n is the notification as last seen, or nil
	}
	for _, d := range n.GetDeliveries() {
		fmt.Println(d.Channel, d.State, d.Reason)
	}
}
