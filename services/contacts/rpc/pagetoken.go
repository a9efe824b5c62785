package rpc

import (
	"encoding/base64"
	"strconv"
	"strings"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/services/contacts"
)

// Page tokens are opaque to callers but not secret: a token only says where the next page
// starts, in data the caller may read anyway. Each kind has a prefix, so a token of one list
// is refused by the other.

func changesToken(c *contacts.ChangesCursor) string {
	if c == nil {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte("c:" + strconv.FormatUint(c.Next, 10) + ":" +
		strconv.FormatUint(c.After.XID, 10) + ":" + strconv.FormatInt(c.After.ID, 10)))
}

// parseChangesToken reads a ListChanges page token; "" is the first page (nil).
func parseChangesToken(token string) (*contacts.ChangesCursor, bool) {
	if token == "" {
		return nil, true
	}
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return nil, false
	}
	parts := strings.Split(string(raw), ":")
	if len(parts) != 4 || parts[0] != "c" {
		return nil, false
	}
	next, err1 := strconv.ParseUint(parts[1], 10, 64)
	xid, err2 := strconv.ParseUint(parts[2], 10, 64)
	id, err3 := strconv.ParseInt(parts[3], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || next == 0 { // no snapshot answers horizon 0
		return nil, false
	}
	return &contacts.ChangesCursor{Next: next, After: contacts.FeedPosition{XID: xid, ID: id}}, true
}

func addressToken(t *contacts.Target) string {
	if t == nil {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte("a:" + string(t.Channel) + ":" + t.Address))
}

// parseAddressToken reads a ListSuppressedAddresses page token; "" is the first page (nil).
// The address is whatever text the token holds: the service checks it.
func parseAddressToken(token string) (*contacts.Target, bool) {
	if token == "" {
		return nil, true
	}
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return nil, false
	}
	rest, ok := strings.CutPrefix(string(raw), "a:")
	if !ok {
		return nil, false
	}
	ch, addr, ok := strings.Cut(rest, ":")
	if !ok {
		return nil, false
	}
	return &contacts.Target{Channel: delivery.Channel(ch), Address: addr}, true
}

// subscribersToken is the ListSubscribers page token that starts after the subscriber last of
// topic; "" (no more pages) when last is "". It names the topic, so that a token is refused for
// another topic's list.
func subscribersToken(topic, last string) string {
	if last == "" {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte("s:" + topic + ":" + last))
}

// parseSubscribersToken reads a ListSubscribers page token given for topic, and returns the
// user id the page starts after; "" is the first page. The user id is whatever text the token
// holds: the service checks it.
func parseSubscribersToken(token, topic string) (string, bool) {
	if token == "" {
		return "", true
	}
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return "", false
	}
	// A topic name holds no ':', so the first ':' after the prefix ends it.
	rest, ok := strings.CutPrefix(string(raw), "s:")
	if !ok {
		return "", false
	}
	t, last, ok := strings.Cut(rest, ":")
	if !ok || t != topic || last == "" {
		return "", false
	}
	return last, true
}
