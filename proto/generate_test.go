package proto

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// generateTools are the pinned tools `make proto` generates with: buf and the plugins
// buf.gen.yaml names. `make tools` installs them into the repository's bin/.
var generateTools = []string{"buf", "protoc-gen-go", "protoc-gen-go-grpc", "protoc-gen-grpc-gateway", "protoc-gen-openapiv2"}

// generated are the outputs of `make proto`, relative to proto/: what it removes before it
// generates. The rest of openapi/ is written by hand.
var generated = []string{"gen", "openapi/herald.swagger.json"}

// inputs are what buf reads to generate, relative to proto/.
var inputs = []string{"buf.yaml", "buf.gen.yaml", "herald", "third_party", "openapi/config.yaml"}

// TestGeneratedCodeIsCurrent regenerates the API as `make proto` does, with the same tools, and
// requires the committed output to be exactly that: a .proto edited without `make proto` would
// otherwise ship with stale Go code and a stale OpenAPI document.
func TestGeneratedCodeIsCurrent(t *testing.T) {
	root := repositoryRoot(t)
	bin := filepath.Join(root, "bin")
	var missing []string
	for _, tool := range generateTools {
		if info, err := os.Stat(filepath.Join(bin, tool)); err != nil || info.IsDir() || info.Mode()&0o111 == 0 {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		// Failing, not skipping: a skipped check passes unnoticed on every machine without them.
		t.Fatalf("%s: missing %s; `make tools` installs the pinned versions (`make test` does it first)", bin, strings.Join(missing, ", "))
	}

	protoDir := filepath.Join(root, "proto")
	// go test caches a pass keyed on the files the test opens, not on those buf opens: reading
	// buf's inputs here makes an edited .proto run the test again.
	readTree(t, protoDir, inputs)
	out := t.TempDir()
	// -o prefixes buf.gen.yaml's out directories, so the committed template is the one tested.
	// buf runs in proto/ as under `make proto`: the openapiv2 plugin reads its configuration
	// from a path relative to there.
	cmd := exec.Command(filepath.Join(bin, "buf"), "generate", "--path", "herald", "-o", out)
	cmd.Dir = protoDir
	// buf finds the plugins on PATH; bin/ first makes them the pinned ones.
	cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	if output, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("buf generate --path herald: %v\n%s", err, output)
	}

	want := readTree(t, out, generated)
	have := readTree(t, protoDir, generated)
	var problems []string
	for _, name := range slices.Sorted(maps.Keys(want)) {
		got, ok := have[name]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("proto/%s is generated but not committed", name))
		case !bytes.Equal(got, want[name]):
			problems = append(problems, fmt.Sprintf("proto/%s differs from what buf generates, from line %d", name, firstDifferentLine(got, want[name])))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(have)) {
		if _, ok := want[name]; !ok {
			problems = append(problems, fmt.Sprintf("proto/%s is committed but not generated", name))
		}
	}
	if len(problems) > 0 {
		t.Errorf("the committed generated code is not what the .proto files generate; run `make proto` and commit the result "+
			"(if that changes nothing, bin/ holds other versions than the Makefile pins: remove them and run `make tools`):\n  %s",
			strings.Join(problems, "\n  "))
	}
}

// repositoryRoot is the directory holding go.work, found upwards from the test's working
// directory (go test runs it in proto/), so the test does not depend on where go test was
// started.
func repositoryRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.work above the test's working directory: the test needs the whole repository, with its bin/")
		}
		dir = parent
	}
}

// readTree reads the files under dir at each of paths (a file or a directory), keyed by their
// slash-separated path relative to dir. A path that does not exist holds no files.
func readTree(t *testing.T, dir string, paths []string) map[string][]byte {
	t.Helper()
	files := make(map[string][]byte)
	for _, p := range paths {
		err := filepath.WalkDir(filepath.Join(dir, filepath.FromSlash(p)), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(dir, path)
			if err != nil {
				return err
			}
			files[filepath.ToSlash(rel)] = data
			return nil
		})
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
	}
	return files
}

// firstDifferentLine is the 1-based number of the first line where a and b differ.
func firstDifferentLine(a, b []byte) int {
	n := min(len(a), len(b))
	i := 0
	for i < n && a[i] == b[i] {
		i++
	}
	return bytes.Count(a[:i], []byte("\n")) + 1
}
