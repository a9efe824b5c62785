package contacts

import (
	"context"
	"fmt"
	"regexp"

	"github.com/heraldhq/herald/internal/errs"
)

// Topics: users subscribe to a topic, and the notifier's SendToTopic pages through a topic's
// subscribers (ListSubscribers) to fan one send out to each of them. A subscription belongs to
// its user: deleting the user ends it.

// TopicStore keeps subscriptions. The postgres package implements it; a Service whose Store
// does not has no topics (FailedPrecondition).
type TopicStore interface {
	// Subscribe subscribes the users among ids that exist to topic, and returns how many were
	// not subscribed before and the ids that name no user.
	Subscribe(ctx context.Context, topic string, ids []string) (added int, unknown []string, err error)
	// Unsubscribe ends the subscriptions of ids to topic and returns how many there were.
	Unsubscribe(ctx context.Context, topic string, ids []string) (int, error)
	// Subscribers returns, in user id order, at most max subscribers of topic whose id sorts
	// after after ("": from the first), and whether there may be more.
	Subscribers(ctx context.Context, topic, after string, max int) ([]string, bool, error)
	// UserTopics returns, by name, at most max topics userID is subscribed to.
	UserTopics(ctx context.Context, userID string, max int) ([]string, error)
}

// Limits on the subscriber pages: a page of the longest user ids stays around 1 MiB, well under
// gRPC's 4 MiB message limit.
const (
	DefaultSubscriberPage = 1_000
	MaxSubscriberPage     = 10_000
	maxUserTopics         = 1_000
)

// topicPattern is the form of a topic name: that of a category's.
var topicPattern = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,63}$`)

// ValidTopic reports whether name is a topic name.
func ValidTopic(name string) bool { return topicPattern.MatchString(name) }

// CheckTopic records a violation of field when name is not a topic name.
func CheckTopic(v *errs.Violations, field, name string) {
	if !ValidTopic(name) {
		v.Add(field, "must be 1-64 lower-case letters, digits, '_', '-' or '.', starting with a letter")
	}
}

func (s *Service) topics() (TopicStore, error) {
	if ts, ok := s.Store.(TopicStore); ok {
		return ts, nil
	}
	return nil, errs.E(errs.FailedPrecondition, "this contacts store keeps no topics")
}

// checkSubscription validates a topic and its user ids, each at most once.
func checkSubscription(topic string, ids []string) error {
	var v errs.Violations
	CheckTopic(&v, "topic", topic)
	if len(ids) == 0 {
		v.Add("user_ids", "is required")
	}
	if v.Count("user_ids", len(ids), maxBatch) {
		seen := make(map[string]bool, len(ids))
		for i, id := range ids {
			field := fmt.Sprintf("user_ids[%d]", i)
			checkID(&v, field, id)
			if seen[id] {
				v.Add(field, "is repeated")
			}
			seen[id] = true
		}
	}
	return v.Err()
}

// Subscribe subscribes the users among ids that exist to topic (idempotently), and returns how
// many were not subscribed before and the ids that name no user. Errors: Invalid.
func (s *Service) Subscribe(ctx context.Context, topic string, ids []string) (int, []string, error) {
	if err := checkSubscription(topic, ids); err != nil {
		return 0, nil, err
	}
	ts, err := s.topics()
	if err != nil {
		return 0, nil, err
	}
	return ts.Subscribe(ctx, topic, ids)
}

// Unsubscribe ends the subscriptions of ids to topic and returns how many there were.
// Errors: Invalid.
func (s *Service) Unsubscribe(ctx context.Context, topic string, ids []string) (int, error) {
	if err := checkSubscription(topic, ids); err != nil {
		return 0, err
	}
	ts, err := s.topics()
	if err != nil {
		return 0, err
	}
	return ts.Unsubscribe(ctx, topic, ids)
}

// ListSubscribers returns up to size (0: a default) of topic's subscribers whose ids sort after
// after, and the last one when there may be more ("" on the last page). Errors: Invalid.
func (s *Service) ListSubscribers(ctx context.Context, topic string, size int, after string) ([]string, string, error) {
	var v errs.Violations
	CheckTopic(&v, "topic", topic)
	if size < 0 || size > MaxSubscriberPage {
		v.Add("page_size", fmt.Sprintf("must be between 0 and %d", MaxSubscriberPage))
	}
	if after != "" {
		checkText(&v, "page_token", after, maxUserID)
	}
	if err := v.Err(); err != nil {
		return nil, "", err
	}
	if size == 0 {
		size = DefaultSubscriberPage
	}
	ts, err := s.topics()
	if err != nil {
		return nil, "", err
	}
	ids, more, err := ts.Subscribers(ctx, topic, after, size)
	if err != nil || !more || len(ids) == 0 {
		return ids, "", err
	}
	return ids, ids[len(ids)-1], nil
}

// ListUserTopics returns the topics a user is subscribed to. Errors: Invalid.
func (s *Service) ListUserTopics(ctx context.Context, userID string) ([]string, error) {
	if err := checkUserID("user_id", userID); err != nil {
		return nil, err
	}
	ts, err := s.topics()
	if err != nil {
		return nil, err
	}
	return ts.UserTopics(ctx, userID, maxUserTopics)
}
