package protoconv_test

import (
	"errors"
	"slices"
	"strings"
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
		{"longer than the channels", &heraldv1.Fallback{Channels: []heraldv1.Channel{email, sms, ios, 2, 5, email}}, nil,
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

func TestDigestDomain(t *testing.T) {
	window := func(d time.Duration) *heraldv1.Digest {
		return &heraldv1.Digest{Close: &heraldv1.Digest_Window{Window: durationpb.New(d)}, Template: "t"}
	}
	daily := func(at string) *heraldv1.Digest {
		return &heraldv1.Digest{Close: &heraldv1.Digest_DailyAt{DailyAt: at}, Template: "t"}
	}
	tests := []struct {
		name   string
		in     *heraldv1.Digest
		want   *delivery.Digest
		fields []string
	}{
		{"none", nil, nil, nil},
		{"window", window(10 * time.Minute), &delivery.Digest{Window: 10 * time.Minute, Template: "t"}, nil},
		{"shortest window", window(time.Second), &delivery.Digest{Window: time.Second, Template: "t"}, nil},
		{"longest window", window(7 * 24 * time.Hour), &delivery.Digest{Window: 7 * 24 * time.Hour, Template: "t"}, nil},
		{"daily", daily("08:30"), &delivery.Digest{DailyAt: "08:30", Template: "t"}, nil},
		{"window too short", window(999 * time.Millisecond), nil, []string{"g.window"}},
		{"window too long", window(7*24*time.Hour + time.Second), nil, []string{"g.window"}},
		{"window invalid", &heraldv1.Digest{Close: &heraldv1.Digest_Window{Window: &durationpb.Duration{Seconds: 5, Nanos: -1}},
			Template: "t"}, nil, []string{"g.window"}},
		{"daily out of the day", daily("24:00"), nil, []string{"g.daily_at"}},
		{"daily not HH:MM", daily("8am"), nil, []string{"g.daily_at"}},
		{"no close", &heraldv1.Digest{Template: "t"}, nil, []string{"g"}},
		{"no template", &heraldv1.Digest{Close: &heraldv1.Digest_DailyAt{DailyAt: "08:00"}}, nil, []string{"g.template"}},
		{"template too long", &heraldv1.Digest{Close: &heraldv1.Digest_DailyAt{DailyAt: "08:00"}, Template: strings.Repeat("x", 129)},
			nil, []string{"g.template"}},
		{"template with NUL", &heraldv1.Digest{Close: &heraldv1.Digest_DailyAt{DailyAt: "08:00"}, Template: "a\x00"},
			nil, []string{"g.template"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v errs.Violations
			got := protoconv.DigestDomain(&v, "g", tt.in)
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
			if tt.fields != nil {
				return
			}
			if (got == nil) != (tt.want == nil) || got != nil && *got != *tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			if back := protoconv.DigestDomain(&v, "g", protoconv.DigestProto(got)); (back == nil) != (got == nil) || back != nil && *back != *got {
				t.Errorf("DigestProto does not give it back: %+v", back)
			}
		})
	}
}

func TestMustBeChannel(t *testing.T) {
	const want = "must be CHANNEL_IOS, CHANNEL_ANDROID, CHANNEL_SMS, CHANNEL_EMAIL or CHANNEL_INBOX"
	if got := protoconv.MustBeChannel; got != want {
		t.Errorf("MustBeChannel = %q, want %q", got, want)
	}
}
