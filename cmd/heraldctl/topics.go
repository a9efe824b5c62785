package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"

	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

const topicsUsage = `usage:
  heraldctl topics send <topic> [send flags: --category, --channels, --title, --body, --template, ...] [--wait]
                                   send to every subscriber; --wait shows the progress until done
  heraldctl topics subscribe <topic> [user id...] [-f FILE]
                                   subscribe users (FILE: one user id a line, - for stdin)
  heraldctl topics unsubscribe <topic> [user id...] [-f FILE]
  heraldctl topics subscribers <topic>
                                   list a topic's subscribers
  heraldctl topics of <user id>    list the topics a user is subscribed to
subscribe, unsubscribe, subscribers and of talk to the contacts service (--contacts-addr,
HERALD_CONTACTS_ADDR or the env file) with a key that has contacts access`

// topicsCmd runs heraldctl topics. contacts dials the contacts service, only for the commands
// that need it.
func topicsCmd(ctx context.Context, notify heraldv1.NotificationServiceClient, contacts func() (*grpc.ClientConn, error), args []string, out io.Writer) error {
	if len(args) < 2 {
		return errors.New(topicsUsage)
	}
	if args[0] == "send" {
		return topicSend(ctx, notify, args[1], args[2:], out)
	}
	conn, err := contacts()
	if err != nil {
		return err
	}
	people := heraldv1.NewContactsServiceClient(conn)
	topic := args[1]
	switch args[0] {
	case "subscribe", "unsubscribe":
		return subscribe(ctx, people, args[0] == "subscribe", topic, args[2:], out)
	case "subscribers":
		token := ""
		for {
			res, err := people.ListSubscribers(ctx, &heraldv1.ListSubscribersRequest{Topic: topic, PageSize: 10000, PageToken: token})
			if err != nil {
				return err
			}
			for _, id := range res.UserIds {
				fmt.Fprintln(out, id)
			}
			if token = res.NextPageToken; token == "" {
				return nil
			}
		}
	case "of":
		res, err := people.ListUserTopics(ctx, &heraldv1.ListUserTopicsRequest{UserId: args[1]})
		if err != nil {
			return err
		}
		for _, t := range res.Topics {
			fmt.Fprintln(out, t)
		}
		return nil
	}
	return errors.New(topicsUsage)
}

// subscribe (or unsubscribe) the user ids of args and of -f's file, 1,000 a call.
func subscribe(ctx context.Context, people heraldv1.ContactsServiceClient, sub bool, topic string, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("topics subscribe", flag.ContinueOnError)
	file := fs.String("f", "", "file of user ids, one a line (- for stdin)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ids := fs.Args()
	if *file != "" {
		r := io.Reader(os.Stdin)
		if *file != "-" {
			f, err := os.Open(*file)
			if err != nil {
				return err
			}
			defer f.Close()
			r = f
		}
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if id := strings.TrimSpace(sc.Text()); id != "" {
				ids = append(ids, id)
			}
		}
		if err := sc.Err(); err != nil {
			return err
		}
	}
	if len(ids) == 0 {
		return errors.New("no user ids: give them as arguments or with -f")
	}
	var changed int32
	var unknown []string
	for from := 0; from < len(ids); from += 1000 {
		page := ids[from:min(len(ids), from+1000)]
		if sub {
			res, err := people.Subscribe(ctx, &heraldv1.SubscribeRequest{Topic: topic, UserIds: page})
			if err != nil {
				return err
			}
			changed, unknown = changed+res.Subscribed, append(unknown, res.UnknownUserIds...)
		} else {
			res, err := people.Unsubscribe(ctx, &heraldv1.UnsubscribeRequest{Topic: topic, UserIds: page})
			if err != nil {
				return err
			}
			changed += res.Unsubscribed
		}
	}
	if sub {
		fmt.Fprintf(out, "subscribed %d users to %s (%d were already)\n", changed, topic, len(ids)-int(changed)-len(unknown))
		if len(unknown) > 0 {
			fmt.Fprintf(out, "no such users (not subscribed): %s\n", strings.Join(unknown, ", "))
		}
		return nil
	}
	fmt.Fprintf(out, "unsubscribed %d users from %s\n", changed, topic)
	return nil
}

func topicSend(ctx context.Context, client heraldv1.NotificationServiceClient, topic string, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("topics send", flag.ContinueOnError)
	var (
		channels  = fs.String("channels", "", "comma-separated channels (ios,android,sms,email); empty means all reachable")
		wait      = fs.Bool("wait", false, "show the progress until the fan-out is done")
		waitLimit = fs.Duration("wait-timeout", 10*time.Minute, "how long --wait waits")
	)
	msg := addMessageFlags(fs, "how long each notification may wait to be sent")
	if err := fs.Parse(args); err != nil {
		return err
	}
	req := &heraldv1.SendToTopicRequest{Topic: topic, IdempotencyKey: *msg.idem, Category: *msg.category}
	chs, err := parseChannels(*channels)
	if err != nil {
		return err
	}
	req.Channels = chs
	if tpl := msg.templateRef(); tpl != nil {
		req.Message = &heraldv1.SendToTopicRequest_Template{Template: tpl}
	} else {
		req.Message = &heraldv1.SendToTopicRequest_Content{Content: msg.content()}
	}
	if req.Data, err = parseData(*msg.data); err != nil {
		return err
	}
	req.Ttl = msg.ttlProto()
	res, err := client.SendToTopic(ctx, req)
	if err != nil {
		return err
	}
	printAccepted(out, "topic send", res.NotificationId, res.Duplicate)
	if !*wait {
		return nil
	}
	deadline := time.Now().Add(*waitLimit)
	for {
		n, err := client.GetNotification(ctx, &heraldv1.GetNotificationRequest{NotificationId: res.NotificationId})
		if err != nil {
			return err
		}
		// A cancel (from another client) ends the fan-out as surely as its last page.
		if st := n.Notification.GetTopic().GetState(); st == heraldv1.TopicSendState_TOPIC_SEND_STATE_DONE ||
			st == heraldv1.TopicSendState_TOPIC_SEND_STATE_CANCELED || time.Now().After(deadline) {
			return printNotification(out, n.Notification)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// printTopic shows a topic send's progress, or which topic send a notification came from.
func printTopic(out io.Writer, t *heraldv1.TopicSend) error {
	if t.State == heraldv1.TopicSendState_TOPIC_SEND_STATE_UNSPECIFIED {
		_, err := fmt.Fprintf(out, "from topic send %s (topic %s)\n", t.TopicSendId, t.Topic)
		return err
	}
	state := strings.ToLower(strings.TrimPrefix(t.State.String(), "TOPIC_SEND_STATE_"))
	fmt.Fprintf(out, "topic %s  %s  recipients %d  skipped %d  failed %d\n", t.Topic, state, t.Recipients, t.Skipped, t.Failed)
	if len(t.Deliveries) == 0 {
		return nil
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "STATE\tDELIVERIES")
	for _, c := range t.Deliveries {
		fmt.Fprintf(w, "%s\t%d\n", stateName(c.State), c.Count)
	}
	return w.Flush()
}
