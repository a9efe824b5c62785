package protofuzz

import (
	"testing"

	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

func TestRequestPlantsText(t *testing.T) {
	in := &heraldv1.SendRequest{
		IdempotencyKey: "k",
		Recipient: &heraldv1.Recipient{Kind: &heraldv1.Recipient_Address{Address: &heraldv1.Address{
			Email: "a@example.com", IosTokens: []string{"t0", "t1"}}}},
		Category: "news",
	}
	raw, err := proto.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		field int
		text  string
		want  func(r *heraldv1.SendRequest) string
	}{
		{0, "x\x00y", func(r *heraldv1.SendRequest) string { return r.IdempotencyKey }},
		{1, "b@example.com", func(r *heraldv1.SendRequest) string { return r.GetRecipient().GetAddress().GetEmail() }},
		{3, "t9", func(r *heraldv1.SendRequest) string { return r.GetRecipient().GetAddress().GetIosTokens()[1] }},
		{4, "sports", func(r *heraldv1.SendRequest) string { return r.Category }},
	}
	for _, tt := range tests {
		var got heraldv1.SendRequest
		if !Request(&got, raw, tt.field, tt.text) || tt.want(&got) != tt.text {
			t.Errorf("field %d: got %v, want %q planted", tt.field, &got, tt.text)
		}
	}
	var got heraldv1.SendRequest
	if !Request(&got, raw, 99, "unused") || !proto.Equal(&got, in) {
		t.Errorf("a field past the last string changed the request: %v", &got)
	}
	if Request(&got, raw, 0, "\xff") {
		t.Error("a request with invalid UTF-8 in a string passed; gRPC refuses it")
	}
	if Request(&got, []byte{0xff}, 0, "") {
		t.Error("bytes that do not decode passed")
	}
}
