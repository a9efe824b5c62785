// This program is an example of Herald's Go client: it sends an email, waits until its
// delivery is final, and prints what became of it. Against the stack of make run:
//
//	set -a; . .herald/dev.env; set +a
//	go run ./examples/go -email ada@example.com -subject Hello -body "It works"
//
// It reads the notifier's address and the app key from HERALD_NOTIFIER_ADDR and
// HERALD_API_KEY.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/heraldhq/herald"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

func main() {
	email := flag.String("email", "", "recipient email address")
	subject := flag.String("subject", "Hello from Herald", "email subject")
	body := flag.String("body", "It works.", "email text")
	category := flag.String("category", "account", "notification category")
	wait := flag.Duration("wait", 30*time.Second, "how long to wait for the delivery")
	flag.Parse()
	if *email == "" {
		fmt.Fprintln(os.Stderr, "usage: go run ./examples/go -email ADDRESS [-subject S] [-body B]")
		os.Exit(2)
	}
	if err := run(*email, *subject, *body, *category, *wait); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(email, subject, body, category string, wait time.Duration) error {
	c, err := herald.NewClient(os.Getenv("HERALD_NOTIFIER_ADDR"), os.Getenv("HERALD_API_KEY"))
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()

	res, err := c.Send(ctx, &heraldv1.SendRequest{
		Recipient: &heraldv1.Recipient{Kind: &heraldv1.Recipient_Address{Address: &heraldv1.Address{Email: email}}},
		Category:  category,
		Message:   &heraldv1.SendRequest_Content{Content: &heraldv1.Content{Subject: subject, Body: body}},
	})
	if err != nil {
		return err
	}
	fmt.Println("notification", res.NotificationId)
	n, err := c.WaitForNotification(ctx, res.NotificationId)
	for _, d := range n.GetDeliveries() {
		fmt.Printf("%s\t%s\t%s\n", name(d.Channel.String(), "CHANNEL_"), name(d.State.String(), "DELIVERY_STATE_"), d.Reason)
	}
	return err
}

// name turns an enum value's name into the word heraldctl shows: CHANNEL_EMAIL is email.
func name(enum, prefix string) string { return strings.ToLower(strings.TrimPrefix(enum, prefix)) }
