package pgserver

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

var errNoBinaries = errors.New("postgresql server binaries not found in pg_config --bindir or /usr/lib/postgresql/*/bin: install postgresql: apt-get install -y postgresql")

// Available returns nil if Start can run a server on this machine, and otherwise an error that
// says what to install.
func Available() error {
	if _, err := binDir(); err != nil {
		return err
	}
	_, err := runAs()
	return err
}

// binDir returns the directory holding initdb and postgres.
var binDir = sync.OnceValues(func() (string, error) {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if dir := strings.TrimSpace(string(out)); hasServer(dir) {
			return dir, nil
		}
	}
	// pg_config may be missing (it comes with libpq-dev) or describe a client-only install.
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return slices.Compare(version(b), version(a)) })
	for _, dir := range dirs {
		if hasServer(dir) {
			return dir, nil
		}
	}
	return "", errNoBinaries
})

func hasServer(dir string) bool {
	for _, name := range []string{"initdb", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// version returns the numbers of the version in a path like /usr/lib/postgresql/9.6/bin.
func version(bindir string) []int {
	var v []int
	for part := range strings.SplitSeq(filepath.Base(filepath.Dir(bindir)), ".") {
		n, err := strconv.Atoi(part)
		if err != nil {
			return nil
		}
		v = append(v, n)
	}
	return v
}
