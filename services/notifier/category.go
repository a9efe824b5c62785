package notifier

import (
	"context"
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

// categories caches the category list: it changes rarely and every Send reads it.
type categories struct {
	mu     sync.Mutex
	byName map[string]preference.Category
	loaded time.Time
}

// category returns the named category, refusing unknown ones. A name missing from the cache
// reloads it once, so a category created a moment ago on another replica is found.
func (s *Service) category(ctx context.Context, name string) (preference.Category, error) {
	c := &s.cats
	c.mu.Lock()
	defer c.mu.Unlock()
	cat, ok := c.byName[name]
	if ok && s.now().Sub(c.loaded) < categoryTTL {
		return cat, nil
	}
	list, err := s.Store.Categories(ctx)
	if err != nil {
		if ok { // serve the last known rules rather than refuse every Send
			return cat, nil
		}
		return preference.Category{}, err
	}
	c.byName = make(map[string]preference.Category, len(list))
	for _, x := range list {
		c.byName[x.Name] = x
	}
	c.loaded = s.now()
	if cat, ok = c.byName[name]; !ok {
		return preference.Category{}, errs.Field("category", "is not a known category (see AdminService.ListCategories)")
	}
	return cat, nil
}

// Categories lists every category.
func (s *Service) Categories(ctx context.Context) ([]preference.Category, error) {
	return s.Store.Categories(ctx)
}

// PutCategory creates or replaces a category. Errors: PermissionDenied, Invalid.
func (s *Service) PutCategory(ctx context.Context, caller appkey.Caller, c preference.Category) error {
	if !caller.Admin {
		return errs.E(errs.PermissionDenied, "only admin apps may change categories")
	}
	var v errs.Violations
	if v.Bytes("category.name", c.Name, preference.MaxCategoryName) && !categoryPattern.MatchString(c.Name) {
		v.Add("category.name", "must be 1-64 lower-case letters, digits, '_', '-' or '.', starting with a letter")
	}
	checkLen(&v, "category.description", c.Description, maxCategoryDescription)
	v.Count("category.allowed_channels", len(c.AllowedChannels), len(delivery.Channels))
	v.Count("category.caps", len(c.Caps), preference.MaxCaps)
	if err := v.Err(); err != nil {
		return err
	}
	if err := s.Store.PutCategory(ctx, c); err != nil {
		return err
	}
	s.cats.mu.Lock()
	s.cats.loaded = time.Time{} // this replica sees the change at once
	s.cats.mu.Unlock()
	return nil
}
