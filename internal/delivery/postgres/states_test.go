package postgres

import (
	"slices"
	"strings"
	"testing"

	"github.com/heraldhq/herald/internal/protoconv"
)

// TestUnfinishedStates: the statements' list of unfinished states is exactly the states
// delivery.State.Terminal calls not terminal, every state the API knows included.
func TestUnfinishedStates(t *testing.T) {
	var want []string
	for s := range protoconv.StateProto {
		if !s.Terminal() {
			want = append(want, "'"+string(s)+"'")
		}
	}
	got := strings.Split(strings.Trim(unfinished, "()"), ", ")
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("unfinished = %s, want (%s): the states State.Terminal calls not terminal", unfinished, strings.Join(want, ", "))
	}
}
