package consumer

// Bounds on the provider text an attempt records, in bytes (see pgtext.Fit: one value PostgreSQL
// refuses would fail the statement that records a whole batch of outcomes, and each of those
// deliveries would be sent again). A provider message id is indexed, and PostgreSQL refuses
// index entries of more than about 2.7 kB; real ones are under 100 bytes.
const (
	maxReason            = 64
	maxErrorText         = 2048
	maxProviderMessageID = 256
)
