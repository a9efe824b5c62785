package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/grpc-ecosystem/grpc-gateway/v2/utilities"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/heraldhq/herald/internal/tracing"
	"github.com/heraldhq/herald/proto/openapi"
)

// The HTTP/JSON API is grpc-gateway's reverse proxy, generated from the protos' google.api.http
// bindings: each HTTP request becomes a gRPC call, so keys, scopes, rate limits, validation and
// errors are the gRPC API's own, never a second implementation. The calls reach this process's
// services over an in-memory connection to a second gRPC server (local) that has the same
// services and interceptors as the public one, but no TLS: mutual TLS guards the network
// listener, and there is no network on this path.

// Gateway registers one service's HTTP routes on a gateway mux, calling the service over conn:
// the generated heraldv1.Register<Service>Handler functions.
type Gateway func(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error

// IdempotencyKeyHeader is the HTTP header that carries a send's idempotency key. It reaches the
// services as the gRPC metadata key IdempotencyKeyMetadata.
const IdempotencyKeyHeader = "Idempotency-Key"

// IdempotencyKeyMetadata is the gRPC metadata key that carries a send's idempotency key when
// its request does not.
const IdempotencyKeyMetadata = "idempotency-key"

// RegisterService registers a gRPC service on the public listener and on the in-process one that
// the HTTP/JSON API calls; it makes Server a grpc.ServiceRegistrar for the generated
// Register<Service>Server functions.
func (s *Server) RegisterService(desc *grpc.ServiceDesc, impl any) {
	s.GRPC.RegisterService(desc, impl)
	s.local.RegisterService(desc, impl)
}

// Local returns a client connection to this server's own services, in memory. Closing the
// Server closes it.
func (s *Server) Local() (*grpc.ClientConn, error) {
	s.localOnce.Do(func() {
		s.localConn, s.localErr = grpc.NewClient("passthrough:///herald-local",
			append(tracing.DialOptions(),
				grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
					return s.localLis.DialContext(ctx)
				}),
				grpc.WithTransportCredentials(insecure.NewCredentials()),
				DialOption())...)
	})
	return s.localConn, s.localErr
}

// ServeJSON serves the HTTP/JSON API of the services the gateways register, on the HTTP
// listener under /v1/, with the API's OpenAPI document at /openapi.json. conn is where the
// calls go: Local() for this server's own services, or a connection to another service's
// gRPC API (the caller's key is passed on, so it is authorised there, as itself). Call it before
// Start; every call adds routes to the same /v1/ handler.
func (s *Server) ServeJSON(conn *grpc.ClientConn, gateways ...Gateway) error {
	if s.gateway == nil {
		s.gateway = newGatewayMux()
		s.api = countHTTP(s.Metrics, apiHandler(s.gateway, MaxMessageSize))
		s.HTTP.Handle("/v1/", s.api)
		s.HTTP.Handle("GET /openapi.json", openapi.Handler())
	}
	for _, register := range gateways {
		if err := register(context.Background(), s.gateway, conn); err != nil {
			return fmt.Errorf("register HTTP/JSON routes: %w", err)
		}
	}
	return nil
}

// API is the HTTP/JSON API's handler (nil before ServeJSON), for a service that serves some of
// its routes through a wrapper of its own (the inbox's CORS).
func (s *Server) API() http.Handler { return s.api }

// countHTTP counts the API's HTTP requests by method and status,
// herald_http_api_requests_total{method,code}: the calls they make are counted with every gRPC
// call (herald_grpc_server_*), and this tells how many came over HTTP, and what HTTP answered.
// Not by route: a path holds ids.
func countHTTP(reg prometheus.Registerer, next http.Handler) http.Handler {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_http_api_requests_total",
		Help: "Requests to the HTTP/JSON API, by HTTP method and status code.",
	}, []string{"method", "code"})
	reg.MustRegister(requests)
	return promhttp.InstrumentHandlerCounter(requests, next)
}

// jsonCodec is how the API reads and writes JSON: the protobuf JSON mapping (protojson's
// defaults, as grpcurl shows it: zero values left out of answers), with unknown fields in
// requests refused, naming the field, instead of dropped as grpc-gateway's default marshaler
// does: a misspelt field would otherwise make a request that does something else than its
// sender meant.
var jsonCodec = &runtime.JSONPb{
	UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
}

func newGatewayMux() *runtime.ServeMux {
	return runtime.NewServeMux(
		runtime.SetQueryParameterParser(strictQuery{}),
		runtime.WithMarshalerOption(runtime.MIMEWildcard, jsonCodec),
		runtime.WithIncomingHeaderMatcher(incomingHeader),
		runtime.WithOutgoingHeaderMatcher(func(string) (string, bool) { return "", false }),
		runtime.WithOutgoingTrailerMatcher(func(string) (string, bool) { return "", false }),
		runtime.WithErrorHandler(writeError),
		runtime.WithRoutingErrorHandler(routingError),
		// A user id may hold any character: "/" arrives as %2F and is one path segment.
		runtime.WithUnescapingMode(runtime.UnescapingModeAllCharacters),
		runtime.WithDisableHTTPMethodOverride(),
	)
}

// incomingHeader says which HTTP headers reach the services as gRPC metadata, besides
// Authorization (which grpc-gateway always passes on): the idempotency key. No other header
// does: the services read nothing else from metadata, and a caller must not be able to set what
// they might read one day. (The trace context goes the way of every gRPC client's: into the
// request's context in apiHandler, and from there into the call's metadata.)
func incomingHeader(key string) (string, bool) {
	if textproto.CanonicalMIMEHeaderKey(key) == IdempotencyKeyHeader {
		return IdempotencyKeyMetadata, true
	}
	return "", false
}

// writeError answers a failed call with its google.rpc.Status as JSON, under the HTTP status
// grpc-gateway maps its code to (400, 401, 403, 404, 409, 429, 503, ...). A RetryInfo detail
// becomes Retry-After, in whole seconds rounded up, so that an HTTP client that knows nothing
// of google.rpc still waits as long as the server asked.
func writeError(_ context.Context, _ *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, _ *http.Request, err error) {
	httpStatus := 0
	if hs, ok := errors.AsType[*runtime.HTTPStatusError](err); ok {
		httpStatus, err = hs.HTTPStatus, hs.Err
	}
	st := status.Convert(err)
	if httpStatus == 0 {
		httpStatus = runtime.HTTPStatusFromCode(st.Code())
	}
	body, merr := m.Marshal(st.Proto())
	if merr != nil {
		httpStatus = http.StatusInternalServerError
		body = []byte(`{"code":13,"message":"the error could not be encoded"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if st.Code() == codes.Unauthenticated {
		h.Set("WWW-Authenticate", "Bearer")
	}
	if d, ok := retryDelay(st); ok {
		h.Set("Retry-After", strconv.FormatInt(int64(math.Ceil(d.Seconds())), 10))
	}
	w.WriteHeader(httpStatus)
	w.Write(body)
}

// routingError answers a request no route takes: 404 for an unknown path, 405 for a known path
// with another method (with the status grpc-gateway gives it, NOT_FOUND or UNIMPLEMENTED, as
// the body). writeError alone would answer 501 for the latter, from its code.
func routingError(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
	code := codes.NotFound
	switch httpStatus {
	case http.StatusMethodNotAllowed:
		code = codes.Unimplemented
	case http.StatusBadRequest:
		code = codes.InvalidArgument
	case http.StatusNotFound:
	default:
		code = codes.Internal
	}
	writeError(ctx, mux, m, w, r, &runtime.HTTPStatusError{HTTPStatus: httpStatus, Err: status.Error(code, http.StatusText(httpStatus))})
}

// retryDelay returns the delay of the status's RetryInfo detail, if it has one.
func retryDelay(st *status.Status) (time.Duration, bool) {
	for _, detail := range st.Details() {
		if ri, ok := detail.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			return ri.GetRetryDelay().AsDuration(), true
		}
	}
	return 0, false
}

// apiHandler runs an API request through next, grpc-gateway's mux, in the caller's trace. It
// refuses a request body over limit bytes with 413 and RESOURCE_EXHAUSTED (what gRPC answers a
// message over its limit), before grpc-gateway decodes any of it. The body is read here, whole,
// because the JSON decoder would read it whole anyway; reading it first is what tells an
// oversized body from a malformed one.
func apiHandler(next http.Handler, limit int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tooLarge := func() {
			writeError(r.Context(), nil, jsonCodec, w, r, &runtime.HTTPStatusError{
				HTTPStatus: http.StatusRequestEntityTooLarge,
				Err:        status.Errorf(codes.ResourceExhausted, "the request body is over the limit of %d bytes", limit),
			})
		}
		if r.ContentLength > limit {
			tooLarge()
			return
		}
		// Path and query parameters become proto strings, which must be UTF-8: without this,
		// a request naming "/v1/users/%80" would fail in the gRPC encoder, as an internal error.
		if !utf8.ValidString(r.URL.Path) || !validQuery(r.URL.RawQuery) {
			writeError(r.Context(), nil, jsonCodec, w, r, status.Error(codes.InvalidArgument, "the path and the query must be UTF-8 text"))
			return
		}
		// grpc-gateway splits the path at "%2F" as at "/", so "/v1/users/a%2Fdevices" would be
		// a call for the devices of user "a", not for user "a/devices".
		if strings.Contains(strings.ToUpper(r.URL.RawPath), "%2F") {
			writeError(r.Context(), nil, jsonCodec, w, r, status.Error(codes.InvalidArgument,
				"a path parameter cannot hold '/' (%2F): call the gRPC API for such ids"))
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
		if err != nil {
			writeError(r.Context(), nil, jsonCodec, w, r, status.Error(codes.InvalidArgument, "the request body could not be read"))
			return
		}
		if int64(len(body)) > limit {
			tooLarge()
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r.WithContext(tracing.FromHTTP(r.Context(), r.Header)))
	})
}

// validQuery reports whether every key and value of a raw query decodes to UTF-8 text. One
// that does not decode at all is left to grpc-gateway, which refuses it.
func validQuery(raw string) bool {
	values, err := url.ParseQuery(raw)
	if err != nil {
		return true
	}
	for k, vs := range values {
		if !utf8.ValidString(k) {
			return false
		}
		for _, v := range vs {
			if !utf8.ValidString(v) {
				return false
			}
		}
	}
	return true
}

// strictQuery refuses a query parameter that names no field of the request, as an unknown
// field in a JSON body is refused; grpc-gateway's own parser ignores it, so a misspelt
// parameter would silently not apply. grpc-gateway keeps one query parser per process, which
// runtime.SetQueryParameterParser sets as a mux option: every Herald gateway wants this one.
type strictQuery struct{}

func (strictQuery) Parse(msg proto.Message, values url.Values, filter *utilities.DoubleArray) error {
	for key := range values {
		if !hasFieldPath(msg.ProtoReflect().Descriptor(), strings.Split(key, ".")) {
			return status.Errorf(codes.InvalidArgument, "unknown query parameter %q", key)
		}
	}
	return (&runtime.DefaultQueryParser{}).Parse(msg, values, filter)
}

// hasFieldPath reports whether path names a field of md, through nested messages, each part by
// its proto or its JSON name.
func hasFieldPath(md protoreflect.MessageDescriptor, path []string) bool {
	for i, name := range path {
		if md == nil {
			return false
		}
		fd := md.Fields().ByName(protoreflect.Name(name))
		if fd == nil {
			fd = md.Fields().ByJSONName(name)
		}
		if fd == nil {
			return false
		}
		if i < len(path)-1 {
			md = fd.Message()
		}
	}
	return true
}
