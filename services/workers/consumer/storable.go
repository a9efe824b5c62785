package consumer

import "strings"

// Bounds on the provider text an attempt records, in bytes. A provider message id is indexed,
// and PostgreSQL refuses index entries of more than about 2.7 kB; real ones are under 100 bytes.
const (
	maxReason            = 64
	maxErrorText         = 2048
	maxProviderMessageID = 256
)

// storable makes text from a provider's answer fit for the attempt log: valid UTF-8 without NUL,
// at most max bytes. PostgreSQL refuses invalid UTF-8 and NUL, and one such text would fail the
// statement that records a whole batch of outcomes: each of those deliveries would be sent
// again, and fail to record again.
func storable(s string, max int) string {
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "")
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "")
	}
	return s
}
