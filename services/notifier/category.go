package notifier

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/preference"
)

// categoryTTL bounds how long a replica serves a changed category's old rules.
const categoryTTL = 5 * time.Second

// maxCategoryDescription bounds a category's description.
const maxCategoryDescription = 1024

// Categories keeps the categories: admin apps put them, every Send is decided by one
// (Sender.Categories). Both go through this one type, so that the cache every Send reads is the
// one that a change on this replica empties.
type Categories struct {
	Store CategoryStore

	// The category list is cached: it changes rarely and every Send reads it.
	mu     sync.Mutex
	byName map[string]preference.Category
	loaded time.Time
}

// category returns the named category, refusing unknown ones. A name missing from the cache
// reloads it once, so a category created a moment ago on another replica is found.
func (s *Categories) category(ctx context.Context, name string) (preference.Category, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cat, ok := s.byName[name]
	if ok && time.Since(s.loaded) < categoryTTL {
		return cat, nil
	}
	list, err := s.Store.Categories(ctx)
	if err != nil {
		if ok { // serve the last known rules rather than refuse every Send
			return cat, nil
		}
		return preference.Category{}, err
	}
	s.byName = make(map[string]preference.Category, len(list))
	for _, x := range list {
		s.byName[x.Name] = x
	}
	s.loaded = time.Now()
	if cat, ok = s.byName[name]; !ok {
		return preference.Category{}, errs.Field("category", "is not a known category (see AdminService.ListCategories)")
	}
	return cat, nil
}

// ListCategories lists every category.
func (s *Categories) ListCategories(ctx context.Context) ([]preference.Category, error) {
	return s.Store.Categories(ctx)
}

// PutCategory creates or replaces a category. Errors: PermissionDenied, Invalid.
func (s *Categories) PutCategory(ctx context.Context, caller appkey.Caller, c preference.Category) error {
	if err := RequireAdmin(caller, "change categories"); err != nil {
		return err
	}
	var v errs.Violations
	if v.Bytes("category.name", c.Name, preference.MaxCategoryName) && !categoryPattern.MatchString(c.Name) {
		v.Add("category.name", "must be 1-64 lower-case letters, digits, '_', '-' or '.', starting with a letter")
	}
	checkLen(&v, "category.description", c.Description, maxCategoryDescription)
	v.Count("category.allowed_channels", len(c.AllowedChannels), len(delivery.Channels))
	v.Count("category.caps", len(c.Caps), preference.MaxCaps)
	if c.Fallback != nil {
		for i, ch := range c.Fallback.Channels {
			if !c.Allowed(ch) {
				v.Add(fmt.Sprintf("category.fallback.channels[%d]", i), fmt.Sprintf("%s is not among the allowed channels", ch))
			}
		}
	}
	if c.Digest != nil && c.Fallback != nil {
		v.Add("category.digest", "a digest cannot be combined with a fallback chain")
	}
	if err := v.Err(); err != nil {
		return err
	}
	if err := s.Store.PutCategory(ctx, c); err != nil {
		return err
	}
	s.mu.Lock()
	s.loaded = time.Time{} // this replica sees the change at once
	s.mu.Unlock()
	return nil
}
