package apns

import (
	"context"
	"net"
)

// WithDial returns cfg with its TCP dialer replaced, so that tests can refuse any address but
// loopback.
func WithDial(cfg Config, dial func(ctx context.Context, network, addr string) (net.Conn, error)) Config {
	cfg.dial = dial
	return cfg
}

// MinRenewal is minRenewal, for tests.
const MinRenewal = minRenewal
