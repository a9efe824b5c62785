// Package tracing sets up OpenTelemetry traces for Herald's services: spans for every gRPC call
// (server and client) and for the JetStream hop, whose trace context travels in the message
// headers, so one trace follows a notification from Send to the provider call. Spans are
// exported over OTLP/gRPC when an endpoint is configured; otherwise nothing is recorded.
package tracing

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
)

// Setup installs the global tracer provider and propagator for service, exporting to the
// OTLP/gRPC endpoint (host:port) when it is set. It returns a function that flushes and stops
// the exporter. Without an endpoint it does nothing: tracing stays off (Enabled is false), so
// no span is recorded and no trace context is read or passed on, and calls pay nothing for it.
func Setup(ctx context.Context, service, endpoint string, insecure bool) (func(context.Context) error, error) {
	if endpoint == "" {
		return func(context.Context) error { return nil }, nil
	}
	opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(endpoint)}
	if insecure {
		opts = append(opts, otlptracegrpc.WithInsecure())
	}
	exp, err := otlptracegrpc.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("otlp exporter: %w", err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(resource.NewWithAttributes(semconv.SchemaURL, semconv.ServiceName(service))),
	)
	Use(tp)
	return tp.Shutdown, nil
}

var enabled atomic.Bool

// Use makes tp the tracer provider and turns tracing on for servers and clients created from
// now on. Setup calls it; tests call it with an in-memory provider.
func Use(tp trace.TracerProvider) {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	otel.SetTracerProvider(tp)
	enabled.Store(true)
}

// Enabled reports whether traces are recorded: without it, Herald adds no tracing work to any
// call.
func Enabled() bool { return enabled.Load() }

// ServerOptions trace every gRPC call a server takes, when tracing is on.
func ServerOptions() []grpc.ServerOption {
	if !Enabled() {
		return nil
	}
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler())}
}

// DialOptions trace every gRPC call a client makes, when tracing is on.
func DialOptions() []grpc.DialOption {
	if !Enabled() {
		return nil
	}
	return []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler())}
}

// FromHTTP returns ctx with the trace context of an HTTP request's headers (traceparent), when
// tracing is on, so that the calls made for the request join the caller's trace.
func FromHTTP(ctx context.Context, h http.Header) context.Context {
	if !Enabled() {
		return ctx
	}
	return otel.GetTextMapPropagator().Extract(ctx, propagation.HeaderCarrier(h))
}

// headers adapts nats.Header to the propagator.
type headers nats.Header

func (h headers) Get(k string) string { return nats.Header(h).Get(k) }
func (h headers) Set(k, v string)     { nats.Header(h).Set(k, v) }
func (h headers) Keys() []string {
	out := make([]string, 0, len(h))
	for k := range h {
		out = append(out, k)
	}
	return out
}

// Inject writes ctx's trace context into a message's headers.
func Inject(ctx context.Context, msg *nats.Msg) {
	if !Enabled() || !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	otel.GetTextMapPropagator().Inject(ctx, headers(msg.Header))
}

// Extract returns ctx carrying the trace context of a message's headers.
func Extract(ctx context.Context, h nats.Header) context.Context {
	if !Enabled() || len(h) == 0 {
		return ctx
	}
	return otel.GetTextMapPropagator().Extract(ctx, headers(h))
}

// Tracer returns the tracer Herald's own spans come from.
func Tracer() trace.Tracer { return otel.Tracer("github.com/heraldhq/herald") }

// Disable turns tracing off for servers and clients created from now on (tests that turned it
// on with Use restore the default with it).
func Disable() {
	otel.SetTracerProvider(noop.NewTracerProvider())
	enabled.Store(false)
}
