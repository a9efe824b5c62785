// Package notifiertest holds fakes of what the notifier consumes, shared by the tests of its
// packages.
package notifiertest

import (
	"context"
	"strconv"

	"github.com/heraldhq/herald/services/notifier"
)

var _ notifier.SubscriberLister = (*Subscribers)(nil)

// Subscribers is a topic's subscribers, in order, whatever the topic; a page token is the
// index of the page's first one.
type Subscribers struct {
	IDs []string
	// Before, when set, is called with each page's token before the page is answered; an error
	// it returns is the answer.
	Before func(page string) error
}

// Subscribers implements notifier.SubscriberLister.
func (s *Subscribers) Subscribers(_ context.Context, _, page string, max int) ([]string, string, error) {
	if s.Before != nil {
		if err := s.Before(page); err != nil {
			return nil, "", err
		}
	}
	from := 0
	if page != "" {
		from, _ = strconv.Atoi(page)
	}
	to := min(len(s.IDs), from+max)
	if to == len(s.IDs) {
		return s.IDs[from:to], "", nil
	}
	return s.IDs[from:to], strconv.Itoa(to), nil
}
