// Command heraldctl is Herald's command line for developers and operators: it sends
// notifications and shows what became of them, and makes the keys a new deployment needs
// (keygen, offline). Without flags it talks to the stack that `make run` started, reading
// ./.herald/dev.env; HERALD_NOTIFIER_ADDR and HERALD_API_KEY (or --addr and --key) point it
// elsewhere.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/cli"
	"github.com/heraldhq/herald/internal/server"
	"github.com/heraldhq/herald/internal/tlsconfig"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

const usage = `heraldctl talks to a running Herald, and makes the secrets a new one needs.

Usage:
  heraldctl keygen              print a new app key (hk_...), for --bootstrap-key or
                                --contacts-key
  heraldctl keygen --secret     print 32 random bytes in base64: a link key's secret
                                (--link-keys id:secret) or the short links' key (--link-key)
  heraldctl send [flags]        send a notification (see heraldctl send -h); --fallback email,sms
                                [--step-timeout 10m] tries the channels one after another;
                                --digest-window 10m (or --digest-daily 08:00) --digest-template
                                t collects it into the recipient's digest
  heraldctl status <id>         show a notification and its deliveries (a topic send: its
                                progress)
  heraldctl topics send <topic> [send flags] [--wait]
                                send to every subscriber of a topic
  heraldctl topics subscribe|unsubscribe <topic> [user id...] [-f FILE]
  heraldctl topics subscribers <topic>
  heraldctl topics of <user id> manage and list topic subscriptions (contacts service)
  heraldctl apps create <name> [--categories a,b] [--channels email,sms] [--rate N --burst N]
                [--contacts none|read|write] [--admin]
                                create an app and print its first key; --contacts is what it
                                may do with users' contact data (default none: it can still
                                send to user ids)
  heraldctl apps update <app id or name> [the same flags but --admin]
                                change the scopes given, keep the others
  heraldctl apps list           list the apps with their scopes
  heraldctl apps keys <app id>  list an app's keys
  heraldctl apps issue-key <app id>
                                issue a second key (for rotation; two active at most)
  heraldctl apps revoke-key <key id>
                                revoke a key, at once on every replica
  heraldctl templates apply -f DIR [--dry-run]
                                create new versions of the templates in DIR's YAML files
  heraldctl templates render NAME [--locale L] [--data JSON]
                                preview a template as a recipient would get it
  heraldctl queues [--watch]    per channel: pending, in flight, oldest, rates, dead letters
  heraldctl stats [--period 24h]
                                per template and category: sent, delivered, opened, clicked
  heraldctl dlq list [--channel C] [--reason R]
                                list dead letters (needs an admin key)
  heraldctl dlq redrive [--channel C] [--reason R] [--all] [delivery id...]
                                queue dead letters again (needs an admin key)
  heraldctl inbox token|list|unread|read <user> [flags]
                                a user's in-app inbox: a user token for the live feed, the
                                messages, the unread count, mark read (heraldctl inbox)

apps, queues, stats and dlq need an admin app's key (the dev stack's key is one). keygen needs
nothing: it works offline.

Common flags (before the command): --addr, --key, --contacts-addr, --env-file; or
HERALD_NOTIFIER_ADDR, HERALD_API_KEY, HERALD_CONTACTS_ADDR. Defaults come from ./.herald/dev.env, written by make run.
`

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		if st, ok := status.FromError(err); ok {
			fmt.Fprintf(os.Stderr, "heraldctl: %s: %s\n", st.Code(), st.Message())
		} else {
			fmt.Fprintln(os.Stderr, "heraldctl:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("heraldctl", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage) }
	envFile := fs.String("env-file", ".herald/dev.env", "file of HERALD_* settings written by make run")
	addr := fs.String("addr", "", "notifier gRPC address (default $HERALD_NOTIFIER_ADDR, then the env file)")
	key := fs.String("key", "", "app key (default $HERALD_API_KEY, then the env file)")
	contactsAddr := fs.String("contacts-addr", "", "contacts service gRPC address, for topics (default $HERALD_CONTACTS_ADDR, then the env file)")
	var tlsFiles tlsconfig.Files
	tlsconfig.RegisterClientFlags(fs, &tlsFiles, "", "notifier")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("no command")
	}
	if fs.Arg(0) == "keygen" { // offline: before any key or address is looked for
		return keygen(fs.Args()[1:], out)
	}
	env := cli.ReadEnvFile(*envFile)
	pick := func(flagValue, name string) string {
		if flagValue != "" {
			return flagValue
		}
		if v := os.Getenv(name); v != "" {
			return v
		}
		return env[name]
	}
	target, apiKey := pick(*addr, "HERALD_NOTIFIER_ADDR"), pick(*key, "HERALD_API_KEY")
	if target == "" {
		target = "127.0.0.1:7400"
	}
	if apiKey == "" {
		return errors.New("no app key: pass --key, set HERALD_API_KEY, or start the dev stack with make run")
	}
	creds, err := tlsconfig.DialOption(tlsFiles)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(target, creds, server.DialOption(), appkey.Credentials(apiKey))
	if err != nil {
		return err
	}
	defer conn.Close()

	cmd, rest := fs.Arg(0), fs.Args()[1:]
	switch cmd {
	case "send":
		return send(ctx, heraldv1.NewNotificationServiceClient(conn), rest, out)
	case "status":
		if len(rest) != 1 {
			return errors.New("usage: heraldctl status <notification id>")
		}
		return showStatus(ctx, heraldv1.NewNotificationServiceClient(conn), rest[0], out)
	case "apps":
		return apps(ctx, heraldv1.NewAdminServiceClient(conn), rest, out)
	case "queues":
		return queues(ctx, heraldv1.NewAdminServiceClient(conn), rest, out)
	case "stats":
		return stats(ctx, heraldv1.NewAdminServiceClient(conn), rest, out)
	case "dlq":
		return dlq(ctx, heraldv1.NewAdminServiceClient(conn), rest, out)
	case "templates":
		return templatesCmd(ctx, heraldv1.NewTemplateServiceClient(conn), rest, out)
	case "topics":
		contacts := func() (*grpc.ClientConn, error) {
			target := pick(*contactsAddr, "HERALD_CONTACTS_ADDR")
			if target == "" {
				target = "127.0.0.1:7401"
			}
			c, err := grpc.NewClient(target, creds, server.DialOption(), appkey.Credentials(apiKey))
			if err == nil {
				context.AfterFunc(ctx, func() { c.Close() })
			}
			return c, err
		}
		return topicsCmd(ctx, heraldv1.NewNotificationServiceClient(conn), contacts, rest, out)
	case "inbox":
		return inboxCmd(ctx, heraldv1.NewInboxServiceClient(conn), rest, out)
	}
	fs.Usage()
	return fmt.Errorf("unknown command %q", cmd)
}

func dlq(ctx context.Context, admin heraldv1.AdminServiceClient, args []string, out io.Writer) error {
	if len(args) == 0 || (args[0] != "list" && args[0] != "redrive") {
		return errors.New("usage: heraldctl dlq list|redrive [flags]")
	}
	fs := flag.NewFlagSet("dlq "+args[0], flag.ContinueOnError)
	channel := fs.String("channel", "", "only this channel (ios, android, sms, email, inbox)")
	reason := fs.String("reason", "", "only this reason")
	all := fs.Bool("all", false, "redrive: every dead letter")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	var ch heraldv1.Channel
	if chs, err := parseChannels(*channel); err != nil {
		return err
	} else if len(chs) > 0 {
		ch = chs[0]
	}
	if args[0] == "redrive" {
		res, err := admin.RedriveDeadLetters(ctx, &heraldv1.RedriveDeadLettersRequest{
			DeliveryIds: fs.Args(), Channel: ch, Reason: *reason, All: *all,
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "re-drove %d dead letters\n", res.Redriven)
		return nil
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "DELIVERY\tNOTIFICATION\tCHANNEL\tCATEGORY\tATTEMPTS\tREASON\tLAST ERROR\tDIED")
	token := ""
	for {
		res, err := admin.ListDeadLetters(ctx, &heraldv1.ListDeadLettersRequest{
			Channel: ch, Reason: *reason, PageSize: 500, PageToken: token,
		})
		if err != nil {
			return err
		}
		for _, dl := range res.DeadLetters {
			d := dl.Delivery
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", d.DeliveryId, dl.NotificationId, channelName(d.Channel),
				dl.Category, d.Attempts, d.Reason, d.LastError, d.UpdateTime.AsTime().Local().Format(time.DateTime))
		}
		if token = res.NextPageToken; token == "" {
			return w.Flush()
		}
	}
}

func send(ctx context.Context, client heraldv1.NotificationServiceClient, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("send", flag.ContinueOnError)
	var (
		email     = fs.String("email", "", "recipient email address")
		phone     = fs.String("phone", "", "recipient phone number (E.164, e.g. +14155550100)")
		iosToken  = fs.String("ios-token", "", "recipient APNs device token")
		fcmToken  = fs.String("android-token", "", "recipient FCM registration token")
		user      = fs.String("user", "", "recipient user id (instead of addresses)")
		channels  = fs.String("channels", "", "comma-separated channels (ios,android,sms,email,inbox); empty means all reachable (the inbox only where the category names it)")
		fallback  = fs.String("fallback", "", "comma-separated channels to try one after another (e.g. email,sms), instead of --channels")
		stepWait  = fs.Duration("step-timeout", 0, "with --fallback: move on when a sent step was not delivered within this time (0: sent is enough)")
		digestWin = fs.Duration("digest-window", 0, "collect into the recipient's digest, which closes this long after its first item (e.g. 10m)")
		digestAt  = fs.String("digest-daily", "", "collect into the recipient's daily digest, closing at HH:MM in the user's time zone")
		digestTpl = fs.String("digest-template", "", "with --digest-window or --digest-daily: the template that renders the digest")
		wait      = fs.Bool("wait", false, "wait until every delivery is final, then show them")
		waitLimit = fs.Duration("wait-timeout", 30*time.Second, "how long --wait waits")
	)
	msg := addMessageFlags(fs, "how long the notification may wait to be sent")
	if err := fs.Parse(args); err != nil {
		return err
	}
	req := &heraldv1.SendRequest{IdempotencyKey: *msg.idem, Category: *msg.category}
	if *user != "" {
		req.Recipient = &heraldv1.Recipient{Kind: &heraldv1.Recipient_UserId{UserId: *user}}
	} else {
		a := &heraldv1.Address{Email: *email, Phone: *phone}
		if *iosToken != "" {
			a.IosTokens = []string{*iosToken}
		}
		if *fcmToken != "" {
			a.AndroidTokens = []string{*fcmToken}
		}
		req.Recipient = &heraldv1.Recipient{Kind: &heraldv1.Recipient_Address{Address: a}}
	}
	chs, err := parseChannels(*channels)
	if err != nil {
		return err
	}
	req.Channels = chs
	if *fallback != "" {
		chain, err := parseChannels(*fallback)
		if err != nil {
			return fmt.Errorf("--fallback: %w", err)
		}
		req.Fallback = &heraldv1.Fallback{Channels: chain}
		if *stepWait > 0 {
			req.Fallback.StepTimeout = durationpb.New(*stepWait)
		}
	} else if *stepWait > 0 {
		return errors.New("--step-timeout needs --fallback")
	}
	if req.Digest, err = digestFlags(*digestWin, *digestAt, *digestTpl); err != nil {
		return err
	}
	if tpl := msg.templateRef(); tpl != nil {
		req.Message = &heraldv1.SendRequest_Template{Template: tpl}
	} else {
		req.Message = &heraldv1.SendRequest_Content{Content: msg.content()}
	}
	if req.Data, err = parseData(*msg.data); err != nil {
		return err
	}
	req.Ttl = msg.ttlProto()
	res, err := client.Send(ctx, req)
	if err != nil {
		return err
	}
	printAccepted(out, "notification", res.NotificationId, res.Duplicate)
	if !*wait {
		w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "DELIVERY\tSTEP\tCHANNEL\tSTATE\tREASON")
		for _, d := range res.Deliveries {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", d.DeliveryId, stepName(d.Step), channelName(d.Channel), stateName(d.State), d.Reason)
		}
		if err := w.Flush(); err != nil {
			return err
		}
		printDigests(out, res.Deliveries)
		return nil
	}
	deadline := time.Now().Add(*waitLimit)
	for {
		n, err := client.GetNotification(ctx, &heraldv1.GetNotificationRequest{NotificationId: res.NotificationId})
		if err != nil {
			return err
		}
		if allFinal(n.Notification) || time.Now().After(deadline) {
			return printNotification(out, n.Notification)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func allFinal(n *heraldv1.Notification) bool {
	for _, d := range n.Deliveries {
		switch d.State {
		case heraldv1.DeliveryState_DELIVERY_STATE_SCHEDULED, heraldv1.DeliveryState_DELIVERY_STATE_WAITING,
			heraldv1.DeliveryState_DELIVERY_STATE_QUEUED,
			heraldv1.DeliveryState_DELIVERY_STATE_SENDING, heraldv1.DeliveryState_DELIVERY_STATE_RETRYING:
			return false
		}
	}
	return true
}

func showStatus(ctx context.Context, client heraldv1.NotificationServiceClient, id string, out io.Writer) error {
	res, err := client.GetNotification(ctx, &heraldv1.GetNotificationRequest{NotificationId: id})
	if err != nil {
		return err
	}
	return printNotification(out, res.Notification)
}

func printNotification(out io.Writer, n *heraldv1.Notification) error {
	fmt.Fprintf(out, "notification %s  category %s  created %s\n", n.NotificationId, n.Category,
		n.CreateTime.AsTime().Local().Format(time.DateTime))
	if n.Topic != nil {
		if err := printTopic(out, n.Topic); err != nil { // topics.go
			return err
		}
		if len(n.Deliveries) == 0 {
			return nil
		}
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "DELIVERY\tSTEP\tCHANNEL\tSTATE\tATTEMPTS\tPROVIDER\tPROVIDER ID\tREASON\tLAST ERROR")
	for _, d := range n.Deliveries {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", d.DeliveryId, stepName(d.Step), channelName(d.Channel),
			stateName(d.State), d.Attempts, d.Provider, d.ProviderMessageId, d.Reason, d.LastError)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	printDigests(out, n.Deliveries)
	return nil
}

// printDigests says, under a deliveries table, where each digest's item among ds went.
func printDigests(out io.Writer, ds []*heraldv1.Delivery) {
	for _, d := range ds {
		switch {
		case d.DigestDeliveryId != "":
			fmt.Fprintf(out, "delivery %s went out in digest %s, sent by delivery %s (heraldctl status %s)\n",
				d.DeliveryId, d.DigestNotificationId, d.DigestDeliveryId, d.DigestNotificationId)
		case d.DigestNotificationId != "":
			fmt.Fprintf(out, "delivery %s waits in digest %s, which has not closed yet\n", d.DeliveryId, d.DigestNotificationId)
		}
	}
}

// digestFlags turns send's digest flags into a digest (nil for none).
func digestFlags(window time.Duration, daily, template string) (*heraldv1.Digest, error) {
	switch {
	case window == 0 && daily == "" && template == "":
		return nil, nil
	case window != 0 && daily != "":
		return nil, errors.New("give --digest-window or --digest-daily, not both")
	case template == "":
		return nil, errors.New("a digest needs --digest-template")
	case window != 0:
		return &heraldv1.Digest{Close: &heraldv1.Digest_Window{Window: durationpb.New(window)}, Template: template}, nil
	case daily != "":
		return &heraldv1.Digest{Close: &heraldv1.Digest_DailyAt{DailyAt: daily}, Template: template}, nil
	}
	return nil, errors.New("--digest-template needs --digest-window or --digest-daily")
}

// stepName is a delivery's step in its fallback chain, "-" outside any chain.
func stepName(step int32) string {
	if step == 0 {
		return "-"
	}
	return strconv.Itoa(int(step))
}

func channelName(c heraldv1.Channel) string {
	return strings.ToLower(strings.TrimPrefix(c.String(), "CHANNEL_"))
}

func stateName(s heraldv1.DeliveryState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "DELIVERY_STATE_"))
}

// messageFlags are the flags send and topics send share: the category, what the message says,
// its idempotency key and how long it may wait.
type messageFlags struct {
	category, title, subject, body, html, template, data, idem *string
	ttl                                                        *time.Duration
}

// addMessageFlags defines the shared flags on fs; ttlUsage says what --ttl bounds.
func addMessageFlags(fs *flag.FlagSet, ttlUsage string) *messageFlags {
	return &messageFlags{
		category: fs.String("category", "account", "notification category"),
		title:    fs.String("title", "", "push title"),
		subject:  fs.String("subject", "", "email subject"),
		body:     fs.String("body", "", "text body (push, SMS, email text)"),
		html:     fs.String("html", "", "email HTML"),
		template: fs.String("template", "", "template name (instead of inline content)"),
		data:     fs.String("data", "", "template data as a JSON object"),
		idem:     fs.String("idempotency-key", "", "idempotency key"),
		ttl:      fs.Duration("ttl", 0, ttlUsage),
	}
}

// templateRef is the --template reference, or nil when the message is inline content.
func (m *messageFlags) templateRef() *heraldv1.TemplateRef {
	if *m.template == "" {
		return nil
	}
	return &heraldv1.TemplateRef{Name: *m.template}
}

// content is the inline message, used when there is no --template.
func (m *messageFlags) content() *heraldv1.Content {
	return &heraldv1.Content{Title: *m.title, Subject: *m.subject, Body: *m.body, Html: *m.html}
}

// ttlProto is --ttl for the request, or nil when unset.
func (m *messageFlags) ttlProto() *durationpb.Duration {
	if *m.ttl <= 0 {
		return nil
	}
	return durationpb.New(*m.ttl)
}

// printAccepted prints the id of an accepted send, and says so when the idempotency key made it a duplicate.
func printAccepted(out io.Writer, what, id string, duplicate bool) {
	dup := ""
	if duplicate {
		dup = " (duplicate: the idempotency key was seen before)"
	}
	fmt.Fprintf(out, "%s %s%s\n", what, id, dup)
}

// parseData reads --data: a JSON object, or nothing.
func parseData(data string) (*structpb.Struct, error) {
	if data == "" {
		return nil, nil
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(data), &m); err != nil {
		return nil, fmt.Errorf("--data: %w", err)
	}
	s, err := structpb.NewStruct(m)
	if err != nil {
		return nil, fmt.Errorf("--data: %w", err)
	}
	return s, nil
}
