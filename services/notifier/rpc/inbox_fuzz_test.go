package rpc

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/inbox"
	"github.com/heraldhq/herald/internal/linktoken"
	"github.com/heraldhq/herald/internal/protofuzz"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/notifier"
)

// strictInbox is a hand-written inbox store that records what PostgreSQL (internal/inbox/
// postgres) would refuse or a limit forbids, instead of storing anything.
type strictInbox struct {
	problems []string
}

var (
	_ notifier.InboxStore = (*strictInbox)(nil)
	_ notifier.Opens      = (*strictInbox)(nil)
)

var categoryName = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,63}$`)

func (s *strictInbox) check(user, category string, n int) {
	if user == "" || len(user) > 128 || !utf8.ValidString(user) || bytes.IndexByte([]byte(user), 0) >= 0 {
		s.problems = append(s.problems, fmt.Sprintf("user id %q", user))
	}
	if category != "" && !categoryName.MatchString(category) {
		s.problems = append(s.problems, fmt.Sprintf("category %q", category))
	}
	if n < 0 || n > inbox.MaxIDs {
		s.problems = append(s.problems, fmt.Sprintf("%d ids", n))
	}
}

func (s *strictInbox) List(_ context.Context, q inbox.Query) ([]inbox.Message, error) {
	s.check(q.UserID, q.Category, 0)
	if q.Limit < 1 || q.Limit > inbox.MaxPage || q.Before < 0 {
		s.problems = append(s.problems, fmt.Sprintf("query %+v", q))
	}
	return nil, nil
}

func (s *strictInbox) UnreadCount(_ context.Context, user string) (int64, error) {
	s.check(user, "", 0)
	return 0, nil
}

func (s *strictInbox) After(_ context.Context, user string, _ int64, _ int) ([]inbox.Message, error) {
	s.check(user, "", 0)
	return nil, nil
}

func (s *strictInbox) Unread(_ context.Context, user string, ids []uuid.UUID, category string, limit int) ([]inbox.Message, error) {
	s.check(user, category, len(ids))
	return nil, nil
}

func (s *strictInbox) MarkRead(_ context.Context, user string, ids []uuid.UUID, _ time.Time) (inbox.Change, error) {
	s.check(user, "", len(ids))
	return inbox.Change{}, nil
}

func (s *strictInbox) MarkAllRead(_ context.Context, user, category string, _ time.Time) (inbox.Change, error) {
	s.check(user, category, 0)
	return inbox.Change{}, nil
}

func (s *strictInbox) Archive(_ context.Context, user string, ids []uuid.UUID, _ time.Time) (inbox.Change, error) {
	s.check(user, "", len(ids))
	return inbox.Change{}, nil
}

func (s *strictInbox) RecordProviderEvents(_ context.Context, evs []notifier.ProviderEvent) ([]notifier.ProviderEvent, error) {
	return evs, nil
}

// FuzzInbox feeds InboxService arbitrary requests of each kind, as an app and as a user with a
// token: no panic, only the answers the API documents for a caller's mistakes, the fields at
// fault named, and nothing reaching the store that it would refuse.
func FuzzInbox(f *testing.F) {
	seeds := []proto.Message{
		&heraldv1.ListInboxMessagesRequest{UserId: "u1", PageSize: 5, PageToken: inbox.Cursor(9), Read: heraldv1.ReadFilter_READ_FILTER_UNREAD, Category: "news"},
		&heraldv1.GetUnreadCountRequest{UserId: "u1"},
		&heraldv1.MarkReadRequest{UserId: "u1", Ids: []string{uuid.NewString(), "x"}},
		&heraldv1.MarkAllReadRequest{UserId: "u1", Category: "News"},
		&heraldv1.ArchiveMessagesRequest{Ids: []string{uuid.NewString()}},
		&heraldv1.CreateUserTokenRequest{UserId: "u1", Ttl: durationpb.New(2 * time.Hour)},
	}
	for i, m := range seeds {
		f.Add(uint8(i), false, marshal(m), uint8(255), "")
		f.Add(uint8(i), true, marshal(m), uint8(0), "u1\x00")
	}
	signer, err := linktoken.New(linktoken.Key{ID: "k", Secret: bytes.Repeat([]byte{1}, 32)})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, kind uint8, asUser bool, raw []byte, field uint8, text string) {
		in := input{raw, field, text}
		store := &strictInbox{}
		srv := &InboxServer{Inbox: &notifier.Inbox{Store: store, Opens: store}, Tokens: &notifier.UserTokens{Signer: signer}}
		ctx := appkey.WithCaller(context.Background(), billingCaller)
		if asUser {
			ctx = context.WithValue(context.Background(), userKey{}, "u1")
		}
		var err error
		var what string
		switch kind % 6 {
		case 0:
			var req heraldv1.ListInboxMessagesRequest
			if !in.decode(&req) {
				return
			}
			what = "ListInboxMessages"
			_, err = srv.ListInboxMessages(ctx, &req)
		case 1:
			var req heraldv1.GetUnreadCountRequest
			if !in.decode(&req) {
				return
			}
			what = "GetUnreadCount"
			_, err = srv.GetUnreadCount(ctx, &req)
		case 2:
			var req heraldv1.MarkReadRequest
			if !in.decode(&req) {
				return
			}
			what = "MarkRead"
			_, err = srv.MarkRead(ctx, &req)
		case 3:
			var req heraldv1.MarkAllReadRequest
			if !in.decode(&req) {
				return
			}
			what = "MarkAllRead"
			_, err = srv.MarkAllRead(ctx, &req)
		case 4:
			var req heraldv1.ArchiveMessagesRequest
			if !in.decode(&req) {
				return
			}
			what = "ArchiveMessages"
			_, err = srv.ArchiveMessages(ctx, &req)
		case 5:
			var req heraldv1.CreateUserTokenRequest
			if !in.decode(&req) {
				return
			}
			what = "CreateUserToken"
			var res *heraldv1.CreateUserTokenResponse
			res, err = srv.CreateUserToken(ctx, &req)
			if err == nil {
				if user, _, verr := srv.Tokens.Verify(res.Token); verr != nil || user != req.UserId {
					t.Fatalf("the token made for %q verifies as %q, %v", req.UserId, user, verr)
				}
			}
		}
		protofuzz.Answer(t, what, err)
		if len(store.problems) > 0 {
			t.Fatalf("%s reached the store: %q", what, store.problems)
		}
	})
}
