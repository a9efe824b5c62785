package server

import (
	"runtime"
	"runtime/debug"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
)

// newRPCMetrics returns the per-method metrics of a gRPC server: go-grpc-middleware's, the
// names and labels most gRPC dashboards already know, under Herald's prefix:
//   - herald_grpc_server_started_total{grpc_type,grpc_service,grpc_method}
//   - herald_grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}
//   - herald_grpc_server_handling_seconds{grpc_type,grpc_service,grpc_method} (histogram)
//   - herald_grpc_server_msg_received_total and _msg_sent_total (messages, for streams)
//
// The series are made at a method's first call, not for every method and code up front
// (InitializeMetrics): 17 codes for each of some 40 methods would be mostly zeros.
func newRPCMetrics() *grpcprom.ServerMetrics {
	return grpcprom.NewServerMetrics(
		grpcprom.WithServerCounterOptions(grpcprom.WithNamespace("herald")),
		grpcprom.WithServerHandlingTimeHistogram(
			grpcprom.WithHistogramNamespace("herald"),
			grpcprom.WithHistogramBuckets([]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}),
		),
	)
}

// newBuildInfo returns herald_build_info{version,revision,go_version}, always 1: which build a
// process runs, for dashboards to show and to join on. client_golang's own build info
// collector names it go_build_info{path,version,checksum}, without the VCS revision.
func newBuildInfo() prometheus.Collector {
	version, revision := "unknown", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		version, revision = buildVersion(bi)
	}
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "herald_build_info",
		Help: "Always 1; its labels say which build the process runs: the main module's version, the VCS revision, the Go version.",
		ConstLabels: prometheus.Labels{
			"version": version, "revision": revision, "go_version": runtime.Version(),
		},
	}, func() float64 { return 1 })
}

// buildVersion reads the main module's version and the VCS revision from bi. A binary built
// from a work tree has the version "(devel)"; one built without VCS stamping (-buildvcs=false,
// or a source tree without .git, as in the images) has no revision: "unknown". A revision
// built with uncommitted changes ends in "-dirty".
func buildVersion(bi *debug.BuildInfo) (version, revision string) {
	version, revision = bi.Main.Version, "unknown"
	if version == "" {
		version = "unknown"
	}
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if modified && revision != "unknown" {
		revision += "-dirty"
	}
	return version, revision
}
