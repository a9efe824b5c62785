// Package inbox is the in-app inbox: the messages the inbox channel (delivery.Inbox) stores for
// a user, what a user's list of them is asked with, and the narrow interfaces its users need.
// The workers store messages (Deliverer), the notifier reads and marks them (Reader, Marker),
// and the live feed (services/notifier/inboxfeed) follows each user's feed position. The
// PostgreSQL implementation is in postgres/ (schema "inbox").
//
// Each user's messages are numbered in the order they were stored (Seq, from 1, with gaps):
// the stores of one user are serialised, so a number seen committed means every smaller
// number is committed too. That makes "the messages after N" a complete answer, which the
// live feed resumes from (Last-Event-ID) and lists page by.
package inbox

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Message is one message in a user's inbox. Its id is the id of the delivery that stored it.
type Message struct {
	ID             uuid.UUID
	UserID         string
	NotificationID uuid.UUID
	// Seq is the message's place in its user's feed: larger is stored later.
	Seq        int64
	Category   string
	Title      string
	Body       string
	Data       map[string]any
	CreatedAt  time.Time
	ReadAt     *time.Time
	ArchivedAt *time.Time
}

// ReadFilter narrows a list to read or unread messages.
type ReadFilter int

// The read filters.
const (
	AnyRead ReadFilter = iota
	Unread
	Read
)

// Query asks for one page of a user's messages, newest first.
type Query struct {
	UserID string
	// Before, when not zero, lists only messages with a smaller Seq (the page token).
	Before int64
	// Limit is the page size, 1..MaxPage.
	Limit           int
	Read            ReadFilter
	Category        string
	IncludeArchived bool
}

// Page sizes.
const (
	DefaultPage = 20
	MaxPage     = 100
	// MaxIDs bounds the ids of one MarkRead or Archive.
	MaxIDs = 1000
)

// Change is what a Marker changed: the messages it moved, and the user's unread count after.
type Change struct {
	// Marked are the ids of the messages that changed (were unread, or not archived).
	Marked []Message
	Unread int64
}

// Deliverer stores messages for the workers' inbox channel.
type Deliverer interface {
	// Deliver stores m, once: a message whose id is stored already is left as it is, and
	// Deliver reports false. The live feed learns of a new message when its transaction
	// commits.
	Deliver(ctx context.Context, m *Message) (bool, error)
}

// Reader answers what is in a user's inbox.
type Reader interface {
	// List answers a page of q.UserID's messages, newest first.
	List(ctx context.Context, q Query) ([]Message, error)
	// UnreadCount counts the user's unread messages that are not archived.
	UnreadCount(ctx context.Context, userID string) (int64, error)
	// After answers up to limit of the user's messages with a Seq above seq, oldest first,
	// archived ones included (a feed shows what arrived).
	After(ctx context.Context, userID string, seq int64, limit int) ([]Message, error)
	// Unread answers up to limit of the user's unread, unarchived messages: those of ids, or
	// when ids is nil every one (of category, when it is set).
	Unread(ctx context.Context, userID string, ids []uuid.UUID, category string, limit int) ([]Message, error)
}

// Marker changes the read and archived state of a user's messages. Each change reaches the
// live feed when its transaction commits.
type Marker interface {
	// MarkRead marks the user's listed messages read at at; ids of other users' messages, or
	// of messages already read, change nothing.
	MarkRead(ctx context.Context, userID string, ids []uuid.UUID, at time.Time) (Change, error)
	// Archive archives the user's listed messages.
	Archive(ctx context.Context, userID string, ids []uuid.UUID, at time.Time) (Change, error)
}

// ErrBadCursor is a page token or feed position that no answer gave.
var ErrBadCursor = errors.New("not a page token this service gave")

// cursorPrefix versions page tokens, so their form can change without misreading old ones.
const cursorPrefix = "s1."

// Cursor is the page token that lists the messages before seq.
func Cursor(seq int64) string { return cursorPrefix + strconv.FormatInt(seq, 36) }

// ParseCursor reads a page token made by Cursor; "" is the first page (0).
func ParseCursor(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	rest, ok := strings.CutPrefix(s, cursorPrefix)
	if !ok || len(rest) == 0 || len(rest) > 13 {
		return 0, ErrBadCursor
	}
	n, err := strconv.ParseInt(rest, 36, 64)
	if err != nil || n <= 0 || Cursor(n) != s {
		return 0, ErrBadCursor
	}
	return n, nil
}

// ParsePosition reads a live feed position: a Last-Event-ID (or ?after=) the feed gave, a
// decimal Seq. "" is the start of the feed's present (-1: no resume).
func ParsePosition(s string) (int64, error) {
	if s == "" {
		return -1, nil
	}
	if len(s) > 19 {
		return 0, fmt.Errorf("feed position: %w", ErrBadCursor)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != s {
		return 0, fmt.Errorf("feed position: %w", ErrBadCursor)
	}
	return n, nil
}
