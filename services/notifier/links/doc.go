// Package links shortens the links inside rendered notifications and serves the short links.
//
// A short link is the notifier's public base URL, "/l/", and an 11-character code. The code is
// the base62 form of a 64-bit link id put through a keyed permutation (Codec), so codes are
// unique without collisions to resolve and cannot be enumerated from one another. A link id is
// time-ordered: the second it was issued in its high 32 bits and a sequence number, reserved
// from PostgreSQL in blocks (Allocator), in its low 32 bits.
//
// Text, HTML and push data are rewritten by Text, HTML and IsURL (rewrite.go); Handler serves
// GET /l/{code} from a cache, with a per-address rate limit, and hands each click to a Recorder,
// which classifies, deduplicates and writes clicks in batches off the redirect's path.
//
// Nothing here logs a long URL: they may carry tokens in their query strings.
package links
