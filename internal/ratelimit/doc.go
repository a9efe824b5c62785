// Package ratelimit keeps frequency caps per user and category, and request rates per app,
// shared by every notifier replica through a JetStream key-value bucket.
//
// # Frequency caps
//
// [Limiter.Take] records one event per [Cap] if fewer than Cap.Limit events fall within the
// sliding window (At-Window, At]. Each cap's key holds a compact log of its newest Limit event
// times, and every change is a compare-and-swap on the key's revision (create when absent,
// update at the revision read otherwise, retry on a conflict), so replicas racing on one key
// never record more than Limit events in a window. Reads may be served by a stream follower
// that lags the leader: a stale read can only show fewer events than there are, which makes the
// following write fail its revision check and retry; it never lets an extra event through.
//
// Keys: [CapKey] builds "cap.<category>.<channel>.<user>" and Take appends the window
// (".86400s"), so two caps with different windows on one subject keep separate logs.
// <category> and <channel> are escaped ([A-Za-z0-9_-] kept, any other byte as =XX, the empty
// string as a lone "="); <user> is the first 120 bits of SHA-256(user id) in base32 (24
// characters). Hashing bounds the key's length whatever the id (arbitrary UTF-8 up to 128
// bytes) and keeps ids, which may be e-mail addresses, out of subject names that show up in
// broker tooling. Collisions do not matter at 120 bits: among 10^10 distinct users the chance
// that any two share a hash is about 4e-17, and a collision would only make two users share a
// cap.
//
// Value: a version byte (1), then the log's timestamps in ascending order as Unix milliseconds:
// the first as a zig-zag varint, the others as unsigned varint deltas. Three events in a day
// take about 15 bytes. Times have millisecond resolution.
//
// # App request rates
//
// [Limiter.AllowRequest] is a token bucket (rate per second, burst) shared by all replicas
// without a round trip per request: a replica leases a chunk of tokens from the shared bucket
// with one compare-and-swap on "rate.<app>" and spends them locally. A chunk is at most
// max(1, min(burst, ceil(rate/10))) tokens, about 100 ms of the rate; a replica starts with a
// chunk of 1 and doubles it while it spends whole leases, so a quiet replica holds few tokens.
// Unspent tokens expire after one second (an idle replica does not hoard them) and are handed
// back to the bucket in the replica's next lease. A lease takes what the bucket holds, up to
// the chunk; when it holds less than one token the request is refused, and the replica refuses
// locally, without asking the store again, until the bucket will have refilled its chunk: that
// is the retry-after it reports (at most a chunk's time: 100 ms plus one token's). The app's
// key is "rate.<app>", escaped like a category.
//
// Value: a version byte (1), the bucket's tokens as a big-endian float64, and the time they
// were counted as a zig-zag varint of Unix microseconds.
//
// The approximation: tokens leave the shared bucket when they are leased, not when they are
// spent, so the requests allowed in any interval of length T across all replicas are at most
// burst + rate*T + replicas*chunk (one unspent chunk per replica borrowed before the interval).
// Over a whole run that starts with a full bucket the bound is burst + rate*T. The refill uses
// each replica's clock, so clock skew between replicas adds rate*skew at most. Tokens that
// expire unspent are out of the bucket until their holder's next lease (and lost if the bucket
// is full by then), so the others may find up to a chunk per replica less than the configured
// bucket holds.
//
// # Storage
//
// New creates (or updates) the bucket with history 1 and per-key TTLs: a cap's key expires a
// minute after its newest event has left the window, and an app's key a minute after its
// bucket would have refilled (a missing key reads as a full bucket), so the bucket holds only
// keys that still matter. The bucket's MaxAge is
// the longest window allowed plus that minute, as a backstop. Per-key TTLs need nats-server 2.11
// or later. The nats.go KeyValue API can only set a TTL when a key is created (Update drops
// it), so updates are published to the key's subject directly with the same revision check.
//
// # Failure
//
// Every method bounds its calls to the store by Config.Timeout (250 ms unless set) as well as by
// its context, and returns an error wrapping [ErrUnavailable] when the store cannot answer: the
// caller decides to fail open and counts the failure.
package ratelimit
