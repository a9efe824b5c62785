package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/heraldhq/herald/internal/pgserver"
)

// pgDir returns the directory the private PostgreSQL keeps its cluster in: <dir>/pg when the user
// PostgreSQL runs as can reach it, and otherwise pg in this checkout's own directory under the
// system temp dir (see fallbackDir), which it then also returns. The postgres user cannot reach
// <dir>/pg when Herald runs as root in root's home, which is mode 0700 on Debian.
func pgDir(dir string) (pg, fallback string, err error) {
	pg = filepath.Join(dir, "pg")
	var unreachable *pgserver.UnreachableError
	if err := pgserver.Reachable(pg); !errors.As(err, &unreachable) {
		return pg, "", err
	}
	if fallback, err = fallbackDir(dir); err != nil {
		return "", "", fmt.Errorf("the postgres user cannot enter %s (%v), so PostgreSQL's data would go to the temp dir, but %w",
			unreachable.Parent, unreachable.Mode, err)
	}
	pg = filepath.Join(fallback, "pg")
	var there *pgserver.UnreachableError
	if err := pgserver.Reachable(pg); errors.As(err, &there) {
		return "", "", fmt.Errorf("PostgreSQL runs as the postgres user (it refuses to run as root), which can reach neither %s "+
			"(%s is %v) nor %s (%s is %v): run Herald from a directory that user can enter, point TMPDIR at one, "+
			"or give it a database of your own with DATABASE_URL",
			filepath.Join(dir, "pg"), unreachable.Parent, unreachable.Mode, pg, there.Parent, there.Mode)
	} else if err != nil {
		return "", "", err
	}
	return pg, fallback, nil
}

// fallbackDir returns this checkout's directory under the system temp dir, creating it if need be:
// herald-dev-<a hash of dir>, so that each checkout has its own and finds it again on the next
// start. It belongs to the caller, mode 0755: only the caller can add or replace what it holds,
// while the postgres user can pass through it to the cluster, its subdirectory pg, which
// pgserver gives to that user. A file in it, checkout, names the dir it belongs to.
func fallbackDir(dir string) (string, error) {
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	sum := sha256.Sum256([]byte(dir))
	fallback := filepath.Join(os.TempDir(), "herald-dev-"+hex.EncodeToString(sum[:6]))
	if err := os.Mkdir(fallback, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("create %s: %w", fallback, err)
	}
	// Not followed if it is a link: someone else may have made it, and it is about to hold a
	// directory given to the postgres user.
	fi, err := os.Lstat(fallback)
	if err != nil {
		return "", err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !fi.IsDir() || !ok || int(st.Uid) != os.Geteuid() {
		return "", fmt.Errorf("%s is not a directory of yours (%v): remove it (rm -rf %s) and start again", fallback, fi.Mode(), fallback)
	}
	// Mkdir's mode went through the umask.
	if fi.Mode().Perm() != 0o755 {
		if err := os.Chmod(fallback, 0o755); err != nil {
			return "", err
		}
	}
	mark := filepath.Join(fallback, "checkout")
	if b, err := os.ReadFile(mark); err == nil && strings.TrimSpace(string(b)) != dir {
		return "", fmt.Errorf("%s holds the data of %s, not of %s: remove it (rm -rf %s) and start again", fallback, strings.TrimSpace(string(b)), dir, fallback)
	}
	if err := os.WriteFile(mark, []byte(dir+"\n"), 0o644); err != nil {
		return "", err
	}
	return fallback, nil
}
