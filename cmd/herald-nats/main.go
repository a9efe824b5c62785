// Command herald-nats runs an embedded NATS server with JetStream (package natsembed) as a
// process of its own, so that a benchmark can start NATS beside Herald's services and measure
// its memory and CPU apart from theirs, and a fault suite can kill it. With --cluster-addr and
// --routes it is one node of a JetStream cluster on loopback. It prints one line,
// "herald-nats: ready <url>", once the server accepts connections, and stops on SIGINT or
// SIGTERM. Production runs a NATS cluster instead (deploy/k8s).
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/heraldhq/herald/internal/cli"
	"github.com/heraldhq/herald/internal/natsembed"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "herald-nats:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("herald-nats", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:4222", "host:port to listen on (port 0 picks a free one)")
	dir := fs.String("store-dir", "", "directory of the JetStream store (required)")
	name := fs.String("name", "", "server name, unique within a cluster (default herald-embedded)")
	clusterName := fs.String("cluster-name", "herald", "cluster name (with --cluster-addr)")
	clusterAddr := fs.String("cluster-addr", "", "host:port to listen for routes on: makes this server a node of a JetStream cluster")
	routes := fs.String("routes", "", "comma-separated nats-route://host:port URLs of the cluster's nodes (with --cluster-addr)")
	syncAlways := fs.Bool("sync-always", false, "fsync every write, as production's sync_interval: always does (default: every two minutes)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("--store-dir is required")
	}
	host, portStr, err := net.SplitHostPort(*addr)
	if err != nil {
		return fmt.Errorf("--addr: %w", err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return fmt.Errorf("--addr: bad port %q", portStr)
	}
	if port == 0 {
		port = -1 // natsembed's "pick a free port"
	}
	ctx, stop := cli.SignalContext()
	defer stop()
	cfg := natsembed.Config{Dir: *dir, Host: host, Port: port, SyncAlways: *syncAlways, Name: *name}
	if *clusterAddr != "" {
		cfg.ClusterName, cfg.ClusterAddr = *clusterName, *clusterAddr
		if *routes != "" {
			cfg.Routes = strings.Split(*routes, ",")
		}
	}
	s, err := natsembed.Start(cfg)
	if err != nil {
		return err
	}
	if *clusterAddr != "" {
		// A cluster's node is ready once it is healthy as NATS's /healthz means it: JetStream's
		// meta group has a leader, and the node has caught up on every stream and consumer it
		// holds a replica of. Before that, creating a stream fails, and killing another node
		// may leave a stream without a quorum.
		deadline := time.Now().Add(2 * time.Minute)
		// The meta leader also waits until it sees every node online and current: until then,
		// placing an R3 stream or bucket fails with "no suitable peers for placement" (a node
		// it knows of but has not heard from yet is "offline").
		for s.Healthz(&server.HealthzOptions{}).StatusCode != 200 ||
			(s.JetStreamIsLeader() && (len(s.JetStreamClusterPeers()) < len(cfg.Routes) || !peersOnline(s))) {
			if time.Now().After(deadline) || ctx.Err() != nil {
				s.Shutdown()
				return errors.New("jetstream cluster node not healthy after 2 minutes")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	fmt.Println("herald-nats: ready", s.ClientURL())
	<-ctx.Done()
	s.Shutdown()
	s.WaitForShutdown()
	return nil
}

// peersOnline reports whether the JetStream meta group's leader sees every other node as online
// and caught up.
func peersOnline(s *server.Server) bool {
	jsz, err := s.Jsz(&server.JSzOptions{})
	if err != nil || jsz.Meta == nil {
		return false
	}
	for _, p := range jsz.Meta.Replicas {
		if p.Offline || !p.Current {
			return false
		}
	}
	return true
}
