// Package server runs the two listeners every Herald service has: gRPC (the API, with health
// checking and reflection) and HTTP (health, readiness, metrics, the API as HTTP/JSON where the
// service serves it, and whatever pages the service adds).
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/test/bufconn"

	"github.com/heraldhq/herald/internal/tlsconfig"
	"github.com/heraldhq/herald/internal/tracing"
)

// MaxMessageSize bounds every gRPC request and response.
const MaxMessageSize = 4 << 20

// MaxConcurrentStreams bounds the calls one client connection has in flight at once. Beyond
// it, HTTP/2 flow control holds further calls in the client: a caller offering more than the
// service can take waits on its own side, instead of piling up requests, goroutines and
// memory in the server (30 KB or so per Send).
const MaxConcurrentStreams = 1024

// DialOption makes a gRPC client agree with Herald's servers on MaxMessageSize: a larger request
// fails in the client with RESOURCE_EXHAUSTED, without a round trip, and a larger answer is
// refused as the server would refuse to send it.
func DialOption() grpc.DialOption {
	return grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize))
}

// Check reports whether a dependency is usable; readiness fails while any check fails.
type Check func(ctx context.Context) error

// Server is a service's gRPC and HTTP listeners.
type Server struct {
	GRPC   *grpc.Server
	HTTP   *http.ServeMux
	Health *health.Server
	// Metrics is the process's Prometheus registry, served at /metrics; it starts with the Go
	// runtime and process collectors, herald_build_info, and (with a gRPC listener) the
	// per-method gRPC metrics. Each Server has its own, so that several services can run in one
	// process (the dev stack, the tests).
	Metrics *prometheus.Registry

	log     *slog.Logger
	grpcLis net.Listener
	// local serves the same services as GRPC, in memory, to the HTTP/JSON API (gateway.go).
	local     *grpc.Server
	localLis  *bufconn.Listener
	localOnce sync.Once
	localConn *grpc.ClientConn
	localErr  error
	gateway   *runtime.ServeMux
	api       http.Handler

	httpLis  net.Listener
	httpSrv  *http.Server
	checks   map[string]Check
	serveErr chan error
	stop     chan struct{}
}

// New listens on grpcAddr and httpAddr (":0" style addresses pick free ports) and builds the
// servers; call Start to serve. An empty grpcAddr means HTTP only (GRPC is still built, but
// never served). tls, when set, secures the gRPC listener (mutual TLS with a client CA). The
// interceptors run in order around every unary call, inside the one that counts calls.
func New(log *slog.Logger, grpcAddr, httpAddr string, tls tlsconfig.Files, interceptors ...grpc.UnaryServerInterceptor) (*Server, error) {
	creds, err := tlsconfig.ServerOption(tls)
	if err != nil {
		return nil, err
	}
	// The metrics interceptor is the outermost, so that it counts every call with the code the
	// client gets: refused by authentication, failed in a handler, or recovered from a panic.
	rpcMetrics := newRPCMetrics()
	opts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(append([]grpc.UnaryServerInterceptor{rpcMetrics.UnaryServerInterceptor()}, interceptors...)...),
		grpc.ChainStreamInterceptor(rpcMetrics.StreamServerInterceptor()),
		grpc.MaxRecvMsgSize(MaxMessageSize),
		grpc.MaxConcurrentStreams(MaxConcurrentStreams),
		grpc.MaxSendMsgSize(MaxMessageSize),
	}
	opts = append(opts, tracing.ServerOptions()...)
	local := grpc.NewServer(opts...)
	if creds != nil {
		opts = append(opts, creds)
	}
	var gl net.Listener
	if grpcAddr != "" {
		if gl, err = net.Listen("tcp", grpcAddr); err != nil {
			return nil, fmt.Errorf("listen grpc: %w", err)
		}
	}
	hl, err := net.Listen("tcp", httpAddr)
	if err != nil {
		if gl != nil {
			gl.Close()
		}
		return nil, fmt.Errorf("listen http: %w", err)
	}
	s := &Server{
		GRPC:     grpc.NewServer(opts...),
		HTTP:     http.NewServeMux(),
		Health:   health.NewServer(),
		log:      log,
		grpcLis:  gl,
		local:    local,
		localLis: bufconn.Listen(1 << 20),
		httpLis:  hl,
		checks:   map[string]Check{},
		serveErr: make(chan error, 2),
		stop:     make(chan struct{}),
	}
	s.Metrics = prometheus.NewRegistry()
	s.Metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newBuildInfo())
	if gl != nil {
		s.Metrics.MustRegister(rpcMetrics)
	}
	s.HTTP.Handle("GET /metrics", promhttp.HandlerFor(s.Metrics, promhttp.HandlerOpts{}))
	healthpb.RegisterHealthServer(s.GRPC, s.Health)
	reflection.Register(s.GRPC)
	s.HTTP.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	s.HTTP.HandleFunc("GET /readyz", s.ready)
	s.httpSrv = httpServer(s.HTTP, BodyTimeout)
	return s, nil
}

// BodyTimeout bounds how long a request, headers and body, may take to arrive.
const BodyTimeout = 30 * time.Second

// httpServer serves h with a bound on how long a request may take to arrive: without one, a
// client that sends its headers and then a byte a minute holds a connection and a goroutine
// for as long as it likes. net/http lifts the deadline once the body has been read to its end
// (at once for a request without one), so it never cuts short a long call or a live feed.
func httpServer(h http.Handler, timeout time.Duration) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: min(timeout, 10*time.Second), ReadTimeout: timeout,
		IdleTimeout: 2 * time.Minute}
}

// AddCheck makes readiness depend on check.
func (s *Server) AddCheck(name string, check Check) { s.checks[name] = check }

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	if name, err := s.check(r.Context()); err != nil {
		s.log.Warn("not ready", "check", name, "err", err)
		http.Error(w, name+" unavailable", http.StatusServiceUnavailable)
		return
	}
	w.Write([]byte("ready\n"))
}

// check runs the readiness checks and returns the first that fails.
func (s *Server) check(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for name, check := range s.checks {
		if err := check(ctx); err != nil {
			return name, err
		}
	}
	return "", nil
}

// watchReadiness keeps the gRPC health status in step with the readiness checks, so that gRPC
// clients and probes see what /readyz says.
func (s *Server) watchReadiness() {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	serving := true
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		name, err := s.check(context.Background())
		switch {
		case err != nil && serving:
			s.log.Warn("not ready; gRPC health NOT_SERVING", "check", name, "err", err)
			s.Health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
		case err == nil && !serving:
			s.log.Info("ready again; gRPC health SERVING")
			s.Health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		}
		serving = err == nil
	}
}

// Start serves both listeners in the background and marks the gRPC health as serving.
func (s *Server) Start() {
	s.Health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	go s.watchReadiness()
	if s.grpcLis != nil {
		go func() { s.serveErr <- s.GRPC.Serve(s.grpcLis) }()
	}
	go s.local.Serve(s.localLis) // ends when Close stops it
	go func() {
		if err := s.httpSrv.Serve(s.httpLis); !errors.Is(err, http.ErrServerClosed) {
			s.serveErr <- err
		}
	}()
}

// Err reports a listener that stopped unexpectedly.
func (s *Server) Err() <-chan error { return s.serveErr }

// GRPCAddr is the address the gRPC listener is bound to, or "" without one.
func (s *Server) GRPCAddr() string {
	if s.grpcLis == nil {
		return ""
	}
	return s.grpcLis.Addr().String()
}

// HTTPAddr is the address the HTTP listener is bound to.
func (s *Server) HTTPAddr() string { return s.httpLis.Addr().String() }

// Close stops accepting calls and waits for the ones in progress until ctx is done, then cuts
// them off.
func (s *Server) Close(ctx context.Context) {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.Health.Shutdown()
	// HTTP first: its calls in progress finish through the local server, which stops after.
	s.httpSrv.Shutdown(ctx)
	s.httpSrv.Close()
	done := make(chan struct{})
	go func() {
		s.GRPC.GracefulStop()
		s.local.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.GRPC.Stop()
		s.local.Stop()
	}
	if s.localConn != nil {
		s.localConn.Close()
	}
}
