package protoconv_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/protoconv"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

func TestFallbackDomain(t *testing.T) {
	const (
		email = heraldv1.Channel_CHANNEL_EMAIL
		sms   = heraldv1.Channel_CHANNEL_SMS
		ios   = heraldv1.Channel_CHANNEL_IOS
	)
	tests := []struct {
		name   string
		in     *heraldv1.Fallback
		want   *delivery.Fallback
		fields []string
	}{
		{"none", nil, nil, nil},
		{"chain", &heraldv1.Fallback{Channels: []heraldv1.Channel{email, sms}, StepTimeout: durationpb.New(10 * time.Minute)},
			&delivery.Fallback{Channels: []delivery.Channel{delivery.Email, delivery.SMS}, StepTimeout: 10 * time.Minute}, nil},
		{"one channel", &heraldv1.Fallback{Channels: []heraldv1.Channel{email}}, nil, []string{"f.channels"}},
		{"repeated", &heraldv1.Fallback{Channels: []heraldv1.Channel{email, sms, email}}, nil, []string{"f.channels[2]"}},
		{"unknown", &heraldv1.Fallback{Channels: []heraldv1.Channel{email, 42}}, nil, []string{"f.channels[1]"}},
		{"unspecified", &heraldv1.Fallback{Channels: []heraldv1.Channel{0, email}}, nil, []string{"f.channels[0]"}},
		{"longer than the channels", &heraldv1.Fallback{Channels: []heraldv1.Channel{email, sms, ios, 2, email}}, nil,
			[]string{"f.channels"}},
		{"timeout too short", &heraldv1.Fallback{Channels: []heraldv1.Channel{email, sms}, StepTimeout: durationpb.New(time.Millisecond)},
			nil, []string{"f.step_timeout"}},
		{"timeout too long", &heraldv1.Fallback{Channels: []heraldv1.Channel{email, sms}, StepTimeout: durationpb.New(8 * 24 * time.Hour)},
			nil, []string{"f.step_timeout"}},
		{"timeout invalid", &heraldv1.Fallback{Channels: []heraldv1.Channel{email, sms}, StepTimeout: &durationpb.Duration{Seconds: 5, Nanos: -1}},
			nil, []string{"f.step_timeout"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v errs.Violations
			got := protoconv.FallbackDomain(&v, "f", tt.in)
			var e *errs.Error
			var fields []string
			if errors.As(v.Err(), &e) {
				for _, f := range e.Fields {
					fields = append(fields, f.Field)
				}
			}
			if !slices.Equal(fields, tt.fields) {
				t.Errorf("fields %q, want %q", fields, tt.fields)
			}
			if tt.fields == nil && (got == nil) != (tt.want == nil) ||
				got != nil && tt.want != nil && (!slices.Equal(got.Channels, tt.want.Channels) || got.StepTimeout != tt.want.StepTimeout) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			if tt.fields == nil && tt.in != nil && !slices.Equal(protoconv.FallbackProto(got).GetChannels(), tt.in.GetChannels()) {
				t.Errorf("FallbackProto does not give the channels back")
			}
		})
	}
}
