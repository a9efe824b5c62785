package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

const inboxUsage = `usage: heraldctl inbox token <user> [--ttl 1h]
       heraldctl inbox list <user> [--unread] [--category C] [--archived] [--limit N]
       heraldctl inbox unread <user>
       heraldctl inbox read <user> [--category C] [message id...]   (no ids: every unread message)`

// inboxCmd runs the in-app inbox commands with the app key: what an app's backend does for its
// users, for trying the inbox out and looking into one.
func inboxCmd(ctx context.Context, c heraldv1.InboxServiceClient, args []string, out io.Writer) error {
	if len(args) < 2 {
		return errors.New(inboxUsage)
	}
	cmd, user := args[0], args[1]
	fs := flag.NewFlagSet("inbox "+cmd, flag.ContinueOnError)
	ttl := fs.Duration("ttl", 0, "token: how long it lasts (default 1h, at most 24h)")
	unread := fs.Bool("unread", false, "list: unread messages only")
	category := fs.String("category", "", "list, read: this category only")
	archived := fs.Bool("archived", false, "list: archived messages too")
	limit := fs.Int("limit", 20, "list: at most this many (newest first)")
	if err := fs.Parse(args[2:]); err != nil {
		return err
	}
	switch cmd {
	case "token":
		req := &heraldv1.CreateUserTokenRequest{UserId: user}
		if *ttl != 0 {
			req.Ttl = durationpb.New(*ttl)
		}
		res, err := c.CreateUserToken(ctx, req)
		if err != nil {
			return err
		}
		fmt.Fprintln(out, res.Token)
		return nil
	case "unread":
		res, err := c.GetUnreadCount(ctx, &heraldv1.GetUnreadCountRequest{UserId: user})
		if err != nil {
			return err
		}
		fmt.Fprintln(out, res.Unread)
		return nil
	case "read":
		if fs.NArg() == 0 {
			res, err := c.MarkAllRead(ctx, &heraldv1.MarkAllReadRequest{UserId: user, Category: *category})
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "marked %d read; %d unread\n", res.Marked, res.Unread)
			return nil
		}
		res, err := c.MarkRead(ctx, &heraldv1.MarkReadRequest{UserId: user, Ids: fs.Args()})
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "marked %d read; %d unread\n", res.Marked, res.Unread)
		return nil
	case "list":
		return listInbox(ctx, c, user, *unread, *category, *archived, *limit, out)
	}
	return errors.New(inboxUsage)
}

func listInbox(ctx context.Context, c heraldv1.InboxServiceClient, user string, unread bool, category string, archived bool, limit int, out io.Writer) error {
	req := &heraldv1.ListInboxMessagesRequest{UserId: user, Category: category, IncludeArchived: archived}
	if unread {
		req.Read = heraldv1.ReadFilter_READ_FILTER_UNREAD
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "MESSAGE\tCREATED\tREAD\tCATEGORY\tTITLE")
	for n := 0; n < limit; {
		req.PageSize = int32(min(limit-n, 100))
		res, err := c.ListInboxMessages(ctx, req)
		if err != nil {
			return err
		}
		for _, m := range res.Messages {
			read := "-"
			if m.ReadTime != nil {
				read = m.ReadTime.AsTime().Local().Format(time.DateTime)
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", m.Id, m.CreateTime.AsTime().Local().Format(time.DateTime), read, m.Category, m.Title)
			n++
		}
		if res.NextPageToken == "" || len(res.Messages) == 0 {
			break
		}
		req.PageToken = res.NextPageToken
	}
	return w.Flush()
}
