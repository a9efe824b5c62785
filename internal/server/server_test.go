package server

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/heraldhq/herald/internal/tlsconfig"
)

// TestMessageSize sends requests around MaxMessageSize to a running server: one over it is
// answered RESOURCE_EXHAUSTED at once, by the server to a client that does not know the limit and
// by the client itself with DialOption, and the server goes on serving.
func TestMessageSize(t *testing.T) {
	s, err := New(slog.New(slog.DiscardHandler), "127.0.0.1:0", "127.0.0.1:0", tlsconfig.Files{})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer s.Close(context.Background())

	// A health check request is its service name: 1 byte of tag and 4 of length before it.
	const framing = 5
	check := func(conn *grpc.ClientConn, size int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: strings.Repeat("s", size-framing)})
		return err
	}
	dial := func(opts ...grpc.DialOption) *grpc.ClientConn {
		conn, err := grpc.NewClient(s.GRPCAddr(), append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	for _, c := range []struct {
		name string
		conn *grpc.ClientConn
	}{
		{"a client without the limit", dial()},
		{"a client with DialOption", dial(DialOption())},
	} {
		t.Run(c.name, func(t *testing.T) {
			// At the limit the server reads the request: the health service knows no such service.
			if err := check(c.conn, MaxMessageSize); status.Code(err) != codes.NotFound {
				t.Errorf("a request of MaxMessageSize: %v, want NotFound", err)
			}
			start := time.Now()
			err := check(c.conn, MaxMessageSize+1)
			if status.Code(err) != codes.ResourceExhausted {
				t.Errorf("a request of MaxMessageSize+1: %v, want ResourceExhausted", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("refused after %v", d)
			}
			if _, err := healthpb.NewHealthClient(c.conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
				t.Errorf("the server stopped serving: %v", err)
			}
		})
	}
}
