// Package natsembed runs a NATS server with JetStream inside the calling process, for the
// one-machine dev stack and for tests. Production runs a NATS cluster instead.
package natsembed

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config says where the server keeps its data and where it listens.
type Config struct {
	// Dir holds the JetStream store.
	Dir string
	// Host and Port to listen on; Port -1 picks a free port.
	Host string
	Port int
	// SyncAlways makes the server fsync every write (slower; survives power loss). The default
	// syncs on an interval, which is safe against process crashes, and Herald's reconciler
	// covers the rest.
	SyncAlways bool
	// Name is the server's name, unique within a cluster (default "herald-embedded").
	Name string
	// Cluster, when set, makes the server one node of a JetStream cluster: ClusterName names the
	// cluster, ClusterAddr (host:port) is where it listens for routes, and Routes are the
	// nats-route:// URLs of every node (its own may be among them).
	ClusterName string
	ClusterAddr string
	Routes      []string
}

// Start starts the server and waits until it accepts connections.
func Start(cfg Config) (*server.Server, error) {
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Name == "" {
		cfg.Name = "herald-embedded"
	}
	opts := &server.Options{
		ServerName: cfg.Name,
		Host:       cfg.Host,
		Port:       cfg.Port,
		JetStream:  true,
		StoreDir:   cfg.Dir,
		SyncAlways: cfg.SyncAlways,
		NoSigs:     true,
		NoLog:      true,
		// Big enough for a backlog of millions of tiny delivery-id messages.
		JetStreamMaxStore: 64 << 30,
	}
	if cfg.ClusterAddr != "" {
		host, portStr, err := net.SplitHostPort(cfg.ClusterAddr)
		if err != nil {
			return nil, fmt.Errorf("cluster address: %w", err)
		}
		port, err := strconv.Atoi(portStr)
		if err != nil {
			return nil, fmt.Errorf("cluster address: bad port %q", portStr)
		}
		opts.Cluster = server.ClusterOpts{Name: cfg.ClusterName, Host: host, Port: port}
		for _, r := range cfg.Routes {
			u, err := url.Parse(r)
			if err != nil {
				return nil, fmt.Errorf("route %q: %w", r, err)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("configure nats: %w", err)
	}
	s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("nats did not become ready on %s:%d", cfg.Host, cfg.Port)
	}
	return s, nil
}
