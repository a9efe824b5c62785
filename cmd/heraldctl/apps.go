package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

// apps runs `heraldctl apps ...`: the calling services and their keys.
func apps(ctx context.Context, admin heraldv1.AdminServiceClient, args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: heraldctl apps create|list|keys|issue-key|revoke-key")
	}
	switch args[0] {
	case "create":
		fs := flag.NewFlagSet("apps create", flag.ContinueOnError)
		categories := fs.String("categories", "", "categories the app may send, comma-separated (default all)")
		channels := fs.String("channels", "", "channels the app may send on, comma-separated (default all)")
		rate := fs.Float64("rate", 0, "Send calls per second (default: the server's)")
		burst := fs.Int("burst", 0, "calls allowed at once above the rate")
		isAdmin := fs.Bool("admin", false, "may call AdminService")
		if len(args) < 2 {
			return errors.New("usage: heraldctl apps create <name> [flags]")
		}
		if err := fs.Parse(args[2:]); err != nil {
			return err
		}
		chs, err := parseChannels(*channels)
		if err != nil {
			return err
		}
		res, err := admin.CreateApp(ctx, &heraldv1.CreateAppRequest{Name: args[1], Admin: *isAdmin,
			AllowedCategories: split(*categories), AllowedChannels: chs, RequestsPerSecond: *rate, Burst: int32(*burst)})
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "app %s (%s)\nkey %s\n(the key is shown only once)\n", res.App.Name, res.App.AppId, res.Key)
		return nil
	case "list":
		res, err := admin.ListApps(ctx, &heraldv1.ListAppsRequest{})
		if err != nil {
			return err
		}
		w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "APP\tNAME\tADMIN\tCATEGORIES\tCHANNELS\tRATE/S\tBURST")
		for _, a := range res.Apps {
			var chs []string
			for _, ch := range a.AllowedChannels {
				chs = append(chs, channelName(ch))
			}
			fmt.Fprintf(w, "%s\t%s\t%v\t%s\t%s\t%g\t%d\n", a.AppId, a.Name, a.Admin, orAll(a.AllowedCategories),
				orAll(chs), a.RequestsPerSecond, a.Burst)
		}
		return w.Flush()
	case "keys":
		if len(args) != 2 {
			return errors.New("usage: heraldctl apps keys <app id>")
		}
		res, err := admin.ListKeys(ctx, &heraldv1.ListKeysRequest{AppId: args[1]})
		if err != nil {
			return err
		}
		w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "KEY\tCREATED\tREVOKED")
		for _, k := range res.Keys {
			revoked := "-"
			if k.RevokeTime != nil {
				revoked = k.RevokeTime.AsTime().Local().Format(time.DateTime)
			}
			fmt.Fprintf(w, "%s\t%s\t%s\n", k.KeyId, k.CreateTime.AsTime().Local().Format(time.DateTime), revoked)
		}
		return w.Flush()
	case "issue-key":
		if len(args) != 2 {
			return errors.New("usage: heraldctl apps issue-key <app id>")
		}
		res, err := admin.IssueKey(ctx, &heraldv1.IssueKeyRequest{AppId: args[1]})
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "key %s\n(the key is shown only once)\n", res.Key)
		return nil
	case "revoke-key":
		if len(args) != 2 {
			return errors.New("usage: heraldctl apps revoke-key <key id>")
		}
		if _, err := admin.RevokeKey(ctx, &heraldv1.RevokeKeyRequest{KeyId: args[1]}); err != nil {
			return err
		}
		fmt.Fprintf(out, "revoked %s\n", args[1])
		return nil
	}
	return fmt.Errorf("unknown apps command %q", args[0])
}

func split(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func parseChannels(s string) ([]heraldv1.Channel, error) {
	var out []heraldv1.Channel
	for _, name := range split(s) {
		v, ok := heraldv1.Channel_value["CHANNEL_"+strings.ToUpper(name)]
		if !ok {
			return nil, fmt.Errorf("unknown channel %q", name)
		}
		out = append(out, heraldv1.Channel(v))
	}
	return out, nil
}

func orAll(s []string) string {
	if len(s) == 0 {
		return "all"
	}
	return strings.Join(s, ",")
}
