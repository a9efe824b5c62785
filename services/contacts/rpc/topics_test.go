package rpc

import (
	"fmt"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

// seedUsers stores n users u00000... through BatchUpsertUsers, 1,000 a call, and returns their ids.
func seedUsers(t *testing.T, c heraldv1.ContactsServiceClient, n int) []string {
	t.Helper()
	var ids []string
	for start := 0; start < n; start += 1000 {
		req := &heraldv1.BatchUpsertUsersRequest{}
		for i := start; i < min(n, start+1000); i++ {
			id := fmt.Sprintf("u%05d", i)
			ids = append(ids, id)
			req.Users = append(req.Users, &heraldv1.User{UserId: id, Email: id + "@example.com"})
		}
		if _, err := c.BatchUpsertUsers(t.Context(), req); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

// listAll pages through a topic's subscribers with page size size.
func listAll(t *testing.T, c heraldv1.ContactsServiceClient, topic string, size int32) (ids []string, pages int) {
	t.Helper()
	token := ""
	for {
		res, err := c.ListSubscribers(t.Context(), &heraldv1.ListSubscribersRequest{Topic: topic, PageSize: size, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		ids, pages = append(ids, res.UserIds...), pages+1
		if token = res.NextPageToken; token == "" {
			return ids, pages
		}
	}
}

// TestTopicSubscriptions: on PostgreSQL, subscribing is idempotent and names the ids that are no
// user; the subscribers come back in pages, in order, each exactly once; unsubscribing and
// deleting a user end subscriptions; a user's topics are listed.
func TestTopicSubscriptions(t *testing.T) {
	c := pgClient(t)
	ctx := t.Context()
	ids := seedUsers(t, c, 2500)

	for i := 0; i < len(ids); i += 1000 {
		res, err := c.Subscribe(ctx, &heraldv1.SubscribeRequest{Topic: "news", UserIds: ids[i:min(len(ids), i+1000)]})
		if err != nil {
			t.Fatal(err)
		}
		if want := min(len(ids), i+1000) - i; int(res.Subscribed) != want || len(res.UnknownUserIds) != 0 {
			t.Fatalf("Subscribe = %v, want %d subscribed", res, want)
		}
	}
	res, err := c.Subscribe(ctx, &heraldv1.SubscribeRequest{Topic: "news", UserIds: []string{ids[0], "ghost", ids[1]}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Subscribed != 0 || !slices.Equal(res.UnknownUserIds, []string{"ghost"}) {
		t.Fatalf("Subscribe again = %v, want nothing new and ghost unknown", res)
	}
	if _, err := c.Subscribe(ctx, &heraldv1.SubscribeRequest{Topic: "sports", UserIds: ids[:2]}); err != nil {
		t.Fatal(err)
	}

	for _, size := range []int32{0, 1000, 999, 10000} {
		got, pages := listAll(t, c, "news", size)
		if !slices.Equal(got, ids) {
			t.Fatalf("page size %d: listed %d subscribers, want the %d in order", size, len(got), len(ids))
		}
		t.Logf("page size %d: %d pages", size, pages)
	}

	un, err := c.Unsubscribe(ctx, &heraldv1.UnsubscribeRequest{Topic: "news", UserIds: []string{ids[5], ids[6], "ghost"}})
	if err != nil || un.Unsubscribed != 2 {
		t.Fatalf("Unsubscribe = %v, %v; want 2", un, err)
	}
	if _, err := c.DeleteUser(ctx, &heraldv1.DeleteUserRequest{UserId: ids[0]}); err != nil {
		t.Fatal(err)
	}
	got, _ := listAll(t, c, "news", 0)
	want := slices.Concat(ids[1:5], ids[7:])
	if !slices.Equal(got, want) {
		t.Fatalf("after unsubscribing two and deleting one: %d subscribers, want %d", len(got), len(want))
	}
	topics, err := c.ListUserTopics(ctx, &heraldv1.ListUserTopicsRequest{UserId: ids[1]})
	if err != nil || !slices.Equal(topics.Topics, []string{"news", "sports"}) {
		t.Fatalf("ListUserTopics = %v, %v", topics, err)
	}
	topics, err = c.ListUserTopics(ctx, &heraldv1.ListUserTopicsRequest{UserId: ids[0]})
	if err != nil || len(topics.Topics) != 0 {
		t.Fatalf("a deleted user's topics = %v, %v; want none", topics, err)
	}
}

// TestTopicRequestsRefused: bad input is INVALID_ARGUMENT naming the field.
func TestTopicRequestsRefused(t *testing.T) {
	c := pgClient(t)
	ctx := t.Context()
	ids := seedUsers(t, c, 3)
	if _, err := c.Subscribe(ctx, &heraldv1.SubscribeRequest{Topic: "news", UserIds: ids}); err != nil {
		t.Fatal(err)
	}
	first, err := c.ListSubscribers(ctx, &heraldv1.ListSubscribersRequest{Topic: "news", PageSize: 1})
	if err != nil || first.NextPageToken == "" {
		t.Fatalf("first page: %v, %v", first, err)
	}
	tooMany := make([]string, 1001)
	for i := range tooMany {
		tooMany[i] = fmt.Sprint("x", i)
	}
	for _, tc := range []struct {
		name  string
		call  func() error
		field string
	}{
		{"topic with upper case", func() error {
			_, err := c.Subscribe(ctx, &heraldv1.SubscribeRequest{Topic: "News", UserIds: ids})
			return err
		}, "topic"},
		{"empty topic", func() error {
			_, err := c.ListSubscribers(ctx, &heraldv1.ListSubscribersRequest{})
			return err
		}, "topic"},
		{"no users", func() error {
			_, err := c.Subscribe(ctx, &heraldv1.SubscribeRequest{Topic: "news"})
			return err
		}, "user_ids"},
		{"too many users", func() error {
			_, err := c.Unsubscribe(ctx, &heraldv1.UnsubscribeRequest{Topic: "news", UserIds: tooMany})
			return err
		}, "user_ids"},
		{"repeated user", func() error {
			_, err := c.Subscribe(ctx, &heraldv1.SubscribeRequest{Topic: "news", UserIds: []string{ids[0], ids[0]}})
			return err
		}, "user_ids[1]"},
		{"page size over its limit", func() error {
			_, err := c.ListSubscribers(ctx, &heraldv1.ListSubscribersRequest{Topic: "news", PageSize: 10001})
			return err
		}, "page_size"},
		{"another topic's page token", func() error {
			_, err := c.ListSubscribers(ctx, &heraldv1.ListSubscribersRequest{Topic: "sports", PageToken: first.NextPageToken})
			return err
		}, "page_token"},
		{"made-up page token", func() error {
			_, err := c.ListSubscribers(ctx, &heraldv1.ListSubscribersRequest{Topic: "news", PageToken: "bm90IGEgdG9rZW4"})
			return err
		}, "page_token"},
		{"user with a bad email in a batch", func() error {
			_, err := c.BatchUpsertUsers(ctx, &heraldv1.BatchUpsertUsersRequest{Users: []*heraldv1.User{
				{UserId: "a", Email: "a@example.com"}, {UserId: "b", Email: "not an address"}}})
			return err
		}, "users[1].email"},
		{"user twice in a batch", func() error {
			_, err := c.BatchUpsertUsers(ctx, &heraldv1.BatchUpsertUsersRequest{Users: []*heraldv1.User{{UserId: "a"}, {UserId: "a"}}})
			return err
		}, "users[1].user_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("%v, want INVALID_ARGUMENT", err)
			}
			if violation(err, tc.field) == "" {
				t.Fatalf("%v: no violation of %s", err, tc.field)
			}
		})
	}
	// A refused batch stores nothing.
	if _, err := c.GetUser(ctx, &heraldv1.GetUserRequest{UserId: "a"}); status.Code(err) != codes.NotFound {
		t.Fatalf("a user of a refused batch: %v, want NOT_FOUND", err)
	}
}

// FuzzSubscribersToken: a page token is either refused or names, for its own topic only, a user
// id that the token made for it gives back.
func FuzzSubscribersToken(f *testing.F) {
	f.Add(subscribersToken("news", "u00042"), "news")
	f.Add(subscribersToken("news", "a:b:c"), "news")
	f.Add(subscribersToken("news", "u1"), "sports")
	f.Add("", "news")
	f.Add("czpuZXdzOg", "news")
	f.Add("!!!", "news")
	f.Fuzz(func(t *testing.T, token, topic string) {
		after, ok := parseSubscribersToken(token, topic)
		if !ok {
			return
		}
		if token == "" {
			if after != "" {
				t.Fatalf("the empty token starts after %q", after)
			}
			return
		}
		if after == "" {
			t.Fatal("a token accepted with no user id")
		}
		if again, ok := parseSubscribersToken(subscribersToken(topic, after), topic); !ok || again != after {
			t.Fatalf("round trip of %q: %q, %v", after, again, ok)
		}
		if _, ok := parseSubscribersToken(token, topic+"x"); ok {
			t.Fatalf("token %q accepted for topic %q and %q", token, topic, topic+"x")
		}
	})
}
