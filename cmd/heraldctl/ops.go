package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

// queues runs `heraldctl queues [--watch]`: what waits on each channel and how sending goes.
func queues(ctx context.Context, admin heraldv1.AdminServiceClient, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("queues", flag.ContinueOnError)
	watch := fs.Bool("watch", false, "refresh every --interval until interrupted")
	interval := fs.Duration("interval", 2*time.Second, "refresh interval with --watch")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for {
		res, err := admin.GetQueueStats(ctx, &heraldv1.GetQueueStatsRequest{})
		if err != nil {
			return err
		}
		if *watch {
			fmt.Fprint(out, "\033[H\033[2J") // clear the terminal
		}
		fmt.Fprintf(out, "queues at %s\n", res.Time.AsTime().Local().Format(time.TimeOnly))
		w := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(w, "CHANNEL\tPENDING\tIN FLIGHT\tOLDEST\tSCHEDULED\tRETRYING\tSENT/S\tFAILED/S\tDEAD\t")
		for _, c := range res.Channels {
			fmt.Fprintf(w, "%s\t%d\t%d\t%s\t%d\t%d\t%.1f\t%.1f\t%d\t\n", channelName(c.Channel), c.Pending, c.InFlight,
				c.OldestAge.AsDuration().Round(time.Second), c.Scheduled, c.Retrying, c.SendRate, c.FailureRate, c.DeadLetters)
		}
		w.Flush()
		if len(res.Circuits) > 0 {
			w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "\nCHANNEL\tPROVIDER\tWORKER\tCIRCUIT")
			for _, c := range res.Circuits {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", channelName(c.Channel), c.Provider, c.Worker, c.State)
			}
			w.Flush()
		}
		if !*watch {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(*interval):
		}
	}
}

// stats runs `heraldctl stats [--period 24h]`: deliveries and engagement per template and
// category.
func stats(ctx context.Context, admin heraldv1.AdminServiceClient, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("stats", flag.ContinueOnError)
	period := fs.Duration("period", 24*time.Hour, "how far back to count")
	if err := fs.Parse(args); err != nil {
		return err
	}
	res, err := admin.GetDeliveryStats(ctx, &heraldv1.GetDeliveryStatsRequest{Period: durationpb.New(*period)})
	if err != nil {
		return err
	}
	rate := func(n, of int64) string {
		if of == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(of))
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TEMPLATE\tCATEGORY\tCHANNEL\tSENT\tDELIVERED\tOPENED\tCLICKED\tFAILED\tSKIPPED\tDELIVERY RATE\tOPEN RATE\tCLICK RATE")
	for _, st := range res.Stats {
		template := st.Template
		if template == "" {
			template = "(inline)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", template, st.Category, channelName(st.Channel),
			st.Sent, st.Delivered, st.Opened, st.Clicked, st.Failed, st.Skipped,
			rate(st.Delivered, st.Sent), rate(st.Opened, st.Sent), rate(st.Clicked, st.Sent))
	}
	return w.Flush()
}
