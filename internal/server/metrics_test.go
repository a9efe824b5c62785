package server

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/heraldhq/herald/internal/tlsconfig"
)

func scrape(t *testing.T, s *Server) string {
	t.Helper()
	res, err := http.Get("http://" + s.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRPCMetrics: every call is counted per method with the code the client got, including
// calls an interceptor refused before any handler ran, and timed in the histogram; the build
// info is there with the Go version.
func TestRPCMetrics(t *testing.T) {
	refuseNamed := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if r, ok := req.(*healthpb.HealthCheckRequest); ok && r.Service == "refused" {
			return nil, status.Error(codes.PermissionDenied, "no")
		}
		return h(ctx, req)
	}
	s, err := New(slog.New(slog.DiscardHandler), "127.0.0.1:0", "127.0.0.1:0", tlsconfig.Files{}, refuseNamed)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer s.Close(context.Background())
	conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	ctx := context.Background()
	for _, c := range []struct {
		service string
		want    codes.Code
	}{
		{"", codes.OK},
		{"", codes.OK},
		{"unknown", codes.NotFound},
		{"refused", codes.PermissionDenied},
	} {
		if _, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: c.service}); status.Code(err) != c.want {
			t.Fatalf("Check(%q): %v, want %s", c.service, err, c.want)
		}
	}

	got := scrape(t, s)
	const labels = `grpc_method="Check",grpc_service="grpc.health.v1.Health",grpc_type="unary"`
	for _, want := range []string{
		`herald_grpc_server_started_total{` + labels + `} 4`,
		`herald_grpc_server_handled_total{grpc_code="OK",` + labels + `} 2`,
		`herald_grpc_server_handled_total{grpc_code="NotFound",` + labels + `} 1`,
		`herald_grpc_server_handled_total{grpc_code="PermissionDenied",` + labels + `} 1`,
		`herald_grpc_server_handling_seconds_count{` + labels + `} 4`,
		`herald_grpc_server_handling_seconds_bucket{` + labels + `,le="0.001"}`,
		`herald_build_info{go_version="` + runtime.Version() + `",revision="`,
		`go_goroutines`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestHTTPOnlyMetrics: a server without a gRPC listener (the workers) still has the build info.
func TestHTTPOnlyMetrics(t *testing.T) {
	s, err := New(slog.New(slog.DiscardHandler), "", "127.0.0.1:0", tlsconfig.Files{})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer s.Close(context.Background())
	if got := scrape(t, s); !strings.Contains(got, "herald_build_info{") {
		t.Errorf("/metrics lacks herald_build_info:\n%s", got)
	}
}

func TestBuildVersion(t *testing.T) {
	for _, c := range []struct {
		name                      string
		bi                        debug.BuildInfo
		wantVersion, wantRevision string
	}{
		{"work tree without VCS stamping", debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "(devel)", "unknown"},
		{"tagged module", debug.BuildInfo{Main: debug.Module{Version: "v0.3.0"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "6ae966e"}, {Key: "vcs.modified", Value: "false"}}},
			"v0.3.0", "6ae966e"},
		{"uncommitted changes", debug.BuildInfo{Main: debug.Module{Version: "(devel)"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "6ae966e"}, {Key: "vcs.modified", Value: "true"}}},
			"(devel)", "6ae966e-dirty"},
		{"no version at all", debug.BuildInfo{}, "unknown", "unknown"},
	} {
		t.Run(c.name, func(t *testing.T) {
			v, r := buildVersion(&c.bi)
			if v != c.wantVersion || r != c.wantRevision {
				t.Errorf("buildVersion = %q, %q; want %q, %q", v, r, c.wantVersion, c.wantRevision)
			}
		})
	}
}
