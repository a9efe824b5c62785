package contactstest

import (
	"context"
	"slices"

	"github.com/heraldhq/herald/services/contacts"
)

var (
	_ contacts.TopicStore = (*Store)(nil)
	_ contacts.BulkStore  = (*Store)(nil)
)

// topic records a problem unless name is a topic name: validation must have refused it.
func (s *Store) topic(name string) {
	if !contacts.ValidTopic(name) {
		s.problem("topic %q is not a topic name", name)
	}
}

// Subscribe implements contacts.TopicStore.
func (s *Store) Subscribe(_ context.Context, topic string, ids []string) (int, []string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.topic(topic)
	if s.subs == nil {
		s.subs = map[string]map[string]bool{}
	}
	if s.subs[topic] == nil {
		s.subs[topic] = map[string]bool{}
	}
	added := 0
	var unknown []string
	for _, id := range ids {
		s.id(id)
		switch _, known := s.users[id]; {
		case !known:
			unknown = append(unknown, id)
		case !s.subs[topic][id]:
			s.subs[topic][id] = true
			added++
		}
	}
	return added, unknown, nil
}

// Unsubscribe implements contacts.TopicStore.
func (s *Store) Unsubscribe(_ context.Context, topic string, ids []string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.topic(topic)
	n := 0
	for _, id := range ids {
		s.id(id)
		if s.subs[topic][id] {
			delete(s.subs[topic], id)
			n++
		}
	}
	return n, nil
}

// Subscribers implements contacts.TopicStore.
func (s *Store) Subscribers(_ context.Context, topic, after string, max int) ([]string, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.topic(topic)
	s.text("page start", after, 128)
	var ids []string
	for id := range s.subs[topic] {
		if id > after {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	if len(ids) > max {
		return ids[:max], true, nil
	}
	return ids, false, nil
}

// UserTopics implements contacts.TopicStore.
func (s *Store) UserTopics(_ context.Context, userID string, max int) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.id(userID)
	var topics []string
	for t, users := range s.subs {
		if users[userID] {
			topics = append(topics, t)
		}
	}
	slices.Sort(topics)
	if len(topics) > max {
		topics = topics[:max]
	}
	return topics, nil
}

// UpsertUsers implements contacts.BulkStore.
func (s *Store) UpsertUsers(ctx context.Context, us []*contacts.User) error {
	for _, u := range us {
		if _, err := s.UpsertUser(ctx, u); err != nil {
			return err
		}
	}
	return nil
}
