package main

import (
	"os"
	"testing"

	"github.com/heraldhq/herald/internal/pgtest"
)

// The tests run heraldctl against a notifier on a private PostgreSQL.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
