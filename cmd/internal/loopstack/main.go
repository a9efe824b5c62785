package loopstack

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/heraldhq/herald/internal/cli"
)

// Main is the main function of a command that runs a stack (herald-bench, herald-chaos): it runs
// run with the command's arguments and stdout under a context that SIGINT or SIGTERM ends, and
// exits 2 for a help request, 130 when interrupted (run has stopped everything it started by
// then), 1 on any other error.
func Main(name string, run func(ctx context.Context, args []string, out io.Writer) error) {
	ctx, stop := cli.SignalContext()
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout)
	switch {
	case err == nil:
		return
	case errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	case ctx.Err() != nil:
		fmt.Fprintf(os.Stderr, "%s: interrupted; everything it started is stopped\n", name)
		os.Exit(130)
	}
	fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
	os.Exit(1)
}
