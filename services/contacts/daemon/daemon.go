// Package daemon wires a running contacts service: database, migrations, and the gRPC and HTTP
// listeners. cmd/contacts runs one from flags; the dev stack and the end-to-end tests start the
// same thing in-process.
package daemon

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/server"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/contacts"
	"github.com/heraldhq/herald/services/contacts/postgres"
	"github.com/heraldhq/herald/services/contacts/rpc"
)

// Config is everything a contacts service needs to run.
type Config struct {
	GRPCAddr    string
	HTTPAddr    string
	DatabaseURL string
	KeyCacheTTL time.Duration
	Log         *slog.Logger
}

// RegisterFlags binds c's fields to flags with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.GRPCAddr, "grpc-addr", "127.0.0.1:7401", "gRPC listen address")
	fs.StringVar(&c.HTTPAddr, "http-addr", "127.0.0.1:7481", "HTTP listen address (health, readiness)")
	fs.StringVar(&c.DatabaseURL, "database-url", "", "PostgreSQL URL (required)")
	fs.DurationVar(&c.KeyCacheTTL, "key-cache-ttl", 2*time.Second, "how long a looked-up app key is cached")
}

// Daemon is a running contacts service.
type Daemon struct {
	pool *pgxpool.Pool
	srv  *server.Server
}

// Start brings the contacts service up. App keys are checked against the notifier's schema, so
// the notifier's migrations must have run (they have once any notifier has started).
func Start(ctx context.Context, cfg Config) (_ *Daemon, err error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	if cfg.DatabaseURL == "" {
		return nil, fmt.Errorf("a database URL is required (--database-url or HERALD_DATABASE_URL)")
	}
	log := cfg.Log
	d := &Daemon{}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	openCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if d.pool, err = pgdb.Open(openCtx, cfg.DatabaseURL, 0); err != nil {
		return nil, err
	}
	if err = postgres.Migrate(openCtx, d.pool, log); err != nil {
		return nil, err
	}
	auth := appkey.NewAuthenticator(appkey.PostgresLookup(d.pool), cfg.KeyCacheTTL)
	if d.srv, err = server.New(log, cfg.GRPCAddr, cfg.HTTPAddr,
		errs.UnaryServerInterceptor(log),
		appkey.UnaryServerInterceptor(auth, "/herald.v1.")); err != nil {
		return nil, err
	}
	heraldv1.RegisterContactsServiceServer(d.srv.GRPC, &rpc.Server{Service: &contacts.Service{Store: postgres.New(d.pool)}})
	d.srv.AddCheck("database", func(ctx context.Context) error { return d.pool.Ping(ctx) })
	d.srv.Start()
	log.Info("contacts ready", "grpc", d.srv.GRPCAddr(), "http", d.srv.HTTPAddr())
	return d, nil
}

// GRPCAddr is where the API listens.
func (d *Daemon) GRPCAddr() string { return d.srv.GRPCAddr() }

// HTTPAddr is where health and readiness are served.
func (d *Daemon) HTTPAddr() string { return d.srv.HTTPAddr() }

// Err reports a listener that failed while serving.
func (d *Daemon) Err() <-chan error { return d.srv.Err() }

// Close stops serving, waiting up to 10 s for calls in progress.
func (d *Daemon) Close() {
	if d.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		d.srv.Close(ctx)
		cancel()
	}
	if d.pool != nil {
		d.pool.Close()
	}
}
