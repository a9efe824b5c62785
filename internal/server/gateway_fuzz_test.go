package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/heraldhq/herald/internal/tlsconfig"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

type unimplemented struct {
	heraldv1.UnimplementedNotificationServiceServer
	heraldv1.UnimplementedTemplateServiceServer
	heraldv1.UnimplementedContactsServiceServer
}

// FuzzGateway sends arbitrary requests to every route of the HTTP/JSON API, in front of
// services that answer UNIMPLEMENTED to whatever reaches them. Whatever the method, path, query
// and body, the answer is a google.rpc.Status in JSON with the HTTP status of its code: a
// request that does not decode is refused as the caller's fault (400, 404, 405, 413), and one that
// does reaches the service (501). Never a panic, a 500, or an answer that is not JSON.
func FuzzGateway(f *testing.F) {
	s, err := New(slog.New(slog.DiscardHandler), "", "127.0.0.1:0", tlsconfig.Files{})
	if err != nil {
		f.Fatal(err)
	}
	var impl unimplemented
	heraldv1.RegisterNotificationServiceServer(s, impl)
	heraldv1.RegisterTemplateServiceServer(s, impl)
	heraldv1.RegisterContactsServiceServer(s, impl)
	local, err := s.Local()
	if err != nil {
		f.Fatal(err)
	}
	if err := s.ServeJSON(local, heraldv1.RegisterNotificationServiceHandler, heraldv1.RegisterTemplateServiceHandler,
		heraldv1.RegisterContactsServiceHandler); err != nil {
		f.Fatal(err)
	}
	s.Start()
	f.Cleanup(func() { s.Close(context.Background()) })

	for _, seed := range []struct{ method, target, body string }{
		{"POST", "/v1/notifications:send", `{"recipient":{"address":{"email":"a@example.com"}},"category":"account","content":{"body":"hi"},"sendAt":"2030-01-01T00:00:00Z","ttl":"3600s","data":{"a":[1,{"b":null}]}}`},
		{"POST", "/v1/notifications:sendBatch", `{"recipients":[{"recipient":{"userId":"u1"},"idempotency_key":"k"}],"channels":["CHANNEL_SMS",2]}`},
		{"POST", "/v1/notifications:explain", `{"recipient":{"userId":"u1"},"template":{"name":"t","version":3,"locale":"pt-BR"}}`},
		{"GET", "/v1/notifications/01a24df9-c536-7244-aa7b-886d969ff0b4", ``},
		{"POST", "/v1/notifications/n%20x:cancel", `{}`},
		{"POST", "/v1/deliveries/d1/events", `{"kind":"ENGAGEMENT_KIND_OPENED","time":"2026-12-07T00:00:00.5Z"}`},
		{"POST", "/v1/templates", `{"name":"welcome","parts":{"pushTitle":"Hi {{.name}}"},"locales":[{"locale":"pt","parts":{}}]}`},
		{"GET", "/v1/templates/welcome?version=2", ``},
		{"POST", "/v1/templates/welcome:render", `{"version":1,"data":{"name":"Ada"}}`},
		{"PUT", "/v1/users/u%3A1", `{"email":"a@example.com","phone":"+14155550100","timezone":"Europe/Lisbon"}`},
		{"GET", "/v1/users:batchGet?userIds=a&user_ids=b", ``},
		{"POST", "/v1/users/u1/devices", `{"platform":"PLATFORM_IOS","token":"ab"}`},
		{"GET", "/v1/users/u1/devices?includeInactive=true", ``},
		{"PUT", "/v1/users/u1/settings", `{"settings":{"categories":[{"category":"news","optedOut":true}],"quietHours":{"start":"22:00","end":"07:00"}},"etag":"1"}`},
		{"GET", "/v1/changes?horizon=18446744073709551615&pageToken=x", ``},
		{"GET", "/v1/suppressions?pageSize=-1", ``},
		{"POST", "/v1/recipients:resolve", `{"userIds":["u1"],"targets":[{"channel":"CHANNEL_EMAIL","address":"a@example.com"}]}`},
		{"DELETE", "/v1/users/%E2%98%83", ``},
		{"POST", "/v1/notifications:send", `{"category":"a","category":"b"}`},
		{"POST", "/v1/notifications:send", `{"data":{"a":1e400}}`},
		{"POST", "/v1/notifications:send", "\xff\xfe"},
	} {
		f.Add(seed.method, seed.target, []byte(seed.body))
	}
	// The API's handler itself: the http.ServeMux in front of it redirects unclean paths
	// ("/v1//x") before any of the API sees them.
	api := apiHandler(s.gateway, MaxMessageSize)
	f.Fuzz(func(t *testing.T, method, target string, body []byte) {
		if !strings.HasPrefix(target, "/v1/") {
			return // not the API's
		}
		req, err := http.NewRequest(method, "http://herald"+target, strings.NewReader(string(body)))
		if err != nil {
			return // not a request a client could send
		}
		w := httptest.NewRecorder()
		api.ServeHTTP(w, req)
		var st struct {
			Code    *int32 `json:"code"`
			Message string `json:"message"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &st); err != nil || st.Code == nil {
			t.Fatalf("%s %s: answer %d is not a google.rpc.Status: %q", method, target, w.Code, w.Body.String())
		}
		code := codes.Code(*st.Code)
		switch {
		case w.Code == http.StatusRequestEntityTooLarge && code == codes.ResourceExhausted:
		case w.Code == http.StatusNotFound && code == codes.NotFound: // no route
		case w.Code == http.StatusMethodNotAllowed && code == codes.Unimplemented: // no route for the method
		case w.Code == http.StatusNotImplemented && code == codes.Unimplemented: // decoded and served
		case w.Code == http.StatusBadRequest && code == codes.InvalidArgument:
		default:
			t.Fatalf("%s %s: answer %d %v %q, want 400, 404, 405, 413 or 501", method, target, w.Code, code, st.Message)
		}
	})
}

// FuzzJSONRoundTrip decodes arbitrary JSON as each request the HTTP/JSON API takes, as the
// gateway does: what decodes, encodes and decodes again to the same message, so a request
// means one thing however it is written.
func FuzzJSONRoundTrip(f *testing.F) {
	requests := []proto.Message{
		&heraldv1.SendRequest{}, &heraldv1.SendBatchRequest{}, &heraldv1.ExplainRequest{}, &heraldv1.TrackEventRequest{},
		&heraldv1.Template{}, &heraldv1.RenderTemplateRequest{}, &heraldv1.User{}, &heraldv1.Device{},
		&heraldv1.UnregisterDeviceRequest{}, &heraldv1.UpdateSettingsRequest{}, &heraldv1.ResolveRecipientsRequest{},
		&heraldv1.CreatePreferenceLinkRequest{}, &heraldv1.CancelNotificationRequest{},
	}
	f.Add(uint8(0), []byte(`{"recipient":{"address":{"email":"a@example.com"}},"ttl":"1.5s","sendAt":"2030-01-01T00:00:00+01:00","data":{"x":[true,null,"s",1.5]}}`))
	f.Add(uint8(1), []byte(`{"recipients":[{"data":{}}],"priority":"PRIORITY_HIGH","channels":[1,"CHANNEL_IOS"]}`))
	f.Add(uint8(4), []byte(`{"name":"a","version":"7","createTime":"1970-01-01T00:00:00Z"}`))
	f.Add(uint8(9), []byte(`{"user_id":"u","settings":{"globalOptOut":true,"categories":[{"category":"c","opted_out":false}]}}`))
	f.Add(uint8(10), []byte(`{"targets":[{"channel":"CHANNEL_UNSPECIFIED"}],"userIds":["\u0000"]}`))
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		msg := requests[int(which)%len(requests)].ProtoReflect().New().Interface()
		if err := jsonCodec.Unmarshal(data, msg); err != nil {
			return
		}
		out, err := jsonCodec.Marshal(msg)
		if err != nil {
			t.Fatalf("decoded %s does not encode: %v", msg.ProtoReflect().Descriptor().FullName(), err)
		}
		again := msg.ProtoReflect().New().Interface()
		if err := jsonCodec.Unmarshal(out, again); err != nil {
			t.Fatalf("%s: encoded %q does not decode: %v", msg.ProtoReflect().Descriptor().FullName(), out, err)
		}
		if !proto.Equal(msg, again) {
			t.Fatalf("%s: %q decodes to %v, encodes to %q, decodes to %v", msg.ProtoReflect().Descriptor().FullName(), data, msg, out, again)
		}
	})
}
