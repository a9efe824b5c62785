package main

import (
	"cmp"
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
		return errors.New("usage: heraldctl apps create|update|list|keys|issue-key|revoke-key")
	}
	switch args[0] {
	case "create":
		fs := flag.NewFlagSet("apps create", flag.ContinueOnError)
		categories := fs.String("categories", "", "categories the app may send, comma-separated (default all)")
		channels := fs.String("channels", "", "channels the app may send on, comma-separated (default all)")
		rate := fs.Float64("rate", 0, "Send calls per second (default: the server's)")
		burst := fs.Int("burst", 0, "calls allowed at once above the rate")
		contacts := fs.String("contacts", "none", "what the app may do with the contacts service: none, read or write")
		isAdmin := fs.Bool("admin", false, "may call AdminService (and do everything with contacts)")
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
		access, err := parseContactsAccess(*contacts)
		if err != nil {
			return err
		}
		res, err := admin.CreateApp(ctx, &heraldv1.CreateAppRequest{Name: args[1], Admin: *isAdmin,
			AllowedCategories: split(*categories), AllowedChannels: chs, RequestsPerSecond: *rate, Burst: int32(*burst),
			ContactsAccess: access})
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "app %s (%s)\nkey %s\n(the key is shown only once)\n", res.App.Name, res.App.AppId, res.Key)
		return nil
	case "update":
		return updateApp(ctx, admin, args[1:], out)
	case "list":
		res, err := admin.ListApps(ctx, &heraldv1.ListAppsRequest{})
		if err != nil {
			return err
		}
		return listApps(out, res.Apps)
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

// updateApp runs `heraldctl apps update <app id or name> [flags]`: it changes the scopes and
// rates given as flags and keeps the others as they are.
func updateApp(ctx context.Context, admin heraldv1.AdminServiceClient, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("apps update", flag.ContinueOnError)
	categories := fs.String("categories", "", "categories the app may send, comma-separated (empty: all)")
	channels := fs.String("channels", "", "channels the app may send on, comma-separated (empty: all)")
	rate := fs.Float64("rate", 0, "Send calls per second (0: the server's)")
	burst := fs.Int("burst", 0, "calls allowed at once above the rate")
	contacts := fs.String("contacts", "", "what the app may do with the contacts service: none, read or write")
	if len(args) < 1 {
		return errors.New("usage: heraldctl apps update <app id or name> [--contacts none|read|write] [--categories a,b] [--channels email,sms] [--rate N] [--burst N]")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	res, err := admin.ListApps(ctx, &heraldv1.ListAppsRequest{})
	if err != nil {
		return err
	}
	var app *heraldv1.App
	for _, a := range res.Apps {
		if a.AppId == args[0] || a.Name == args[0] {
			app = a
		}
	}
	if app == nil {
		return fmt.Errorf("no app %q", args[0])
	}
	var flagErr error
	changed := false
	fs.Visit(func(f *flag.Flag) {
		changed = true
		switch f.Name {
		case "categories":
			app.AllowedCategories = split(*categories)
		case "channels":
			chs, err := parseChannels(*channels)
			flagErr = cmp.Or(flagErr, err)
			app.AllowedChannels = chs
		case "rate":
			app.RequestsPerSecond = *rate
		case "burst":
			app.Burst = int32(*burst)
		case "contacts":
			access, err := parseContactsAccess(*contacts)
			flagErr = cmp.Or(flagErr, err)
			app.ContactsAccess = access
		}
	})
	if flagErr != nil {
		return flagErr
	}
	if !changed {
		return errors.New("nothing to change: give --contacts, --categories, --channels, --rate or --burst")
	}
	updated, err := admin.UpdateApp(ctx, &heraldv1.UpdateAppRequest{App: app})
	if err != nil {
		return err
	}
	return listApps(out, []*heraldv1.App{updated.App})
}

// listApps prints apps as a table.
func listApps(out io.Writer, apps []*heraldv1.App) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "APP\tNAME\tADMIN\tCONTACTS\tCATEGORIES\tCHANNELS\tRATE/S\tBURST")
	for _, a := range apps {
		var chs []string
		for _, ch := range a.AllowedChannels {
			chs = append(chs, channelName(ch))
		}
		fmt.Fprintf(w, "%s\t%s\t%v\t%s\t%s\t%s\t%g\t%d\n", a.AppId, a.Name, a.Admin, contactsAccessName(a),
			orAll(a.AllowedCategories), orAll(chs), a.RequestsPerSecond, a.Burst)
	}
	return w.Flush()
}

// parseContactsAccess turns none, read or write into the API's level.
func parseContactsAccess(s string) (heraldv1.ContactsAccess, error) {
	switch s {
	case "none", "":
		return heraldv1.ContactsAccess_CONTACTS_ACCESS_UNSPECIFIED, nil
	case "read":
		return heraldv1.ContactsAccess_CONTACTS_ACCESS_READ, nil
	case "write":
		return heraldv1.ContactsAccess_CONTACTS_ACCESS_WRITE, nil
	}
	return 0, fmt.Errorf("--contacts %q: must be none, read or write", s)
}

// contactsAccessName says what an app may do with contacts: admin apps may do everything.
func contactsAccessName(a *heraldv1.App) string {
	switch {
	case a.Admin:
		return "write (admin)"
	case a.ContactsAccess == heraldv1.ContactsAccess_CONTACTS_ACCESS_READ:
		return "read"
	case a.ContactsAccess == heraldv1.ContactsAccess_CONTACTS_ACCESS_WRITE:
		return "write"
	case a.ContactsAccess == heraldv1.ContactsAccess_CONTACTS_ACCESS_UNSPECIFIED:
		return "none"
	}
	return a.ContactsAccess.String()
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
