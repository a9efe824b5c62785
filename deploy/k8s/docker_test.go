package k8s

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, ...
	args string
}

func parseDockerfile(text string) []instruction {
	var out []instruction
	var cur strings.Builder
	for _, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if s, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

// TestDockerfiles checks each service's Dockerfile by its text (no Docker here): a Go builder,
// a static, trimmed build of the service's own command, a distroless or scratch final image
// run as a non-root user, and the ports the manifests use.
func TestDockerfiles(t *testing.T) {
	o := mustRender(t, "overlays/prod")
	manifestPorts := map[string][]int{}
	for _, d := range o.deployments {
		c := d.Spec.Template.Spec.Containers[0]
		for _, p := range c.Ports {
			if !slices.Contains(manifestPorts[service(c)], int(p.ContainerPort)) {
				manifestPorts[service(c)] = append(manifestPorts[service(c)], int(p.ContainerPort))
			}
		}
	}
	if len(manifestPorts) != 3 {
		t.Fatalf("the manifests run images of %v, want notifier, contacts and workers", keys(manifestPorts))
	}

	for svc, ports := range manifestPorts {
		t.Run(svc, func(t *testing.T) {
			text, err := os.ReadFile(repoPath("services", svc, "Dockerfile"))
			if err != nil {
				t.Fatal(err)
			}
			ins := parseDockerfile(string(text))
			var froms []int
			for i, in := range ins {
				if in.cmd == "FROM" {
					froms = append(froms, i)
				}
			}
			if len(froms) < 2 {
				t.Fatalf("want a multi-stage build, found %d FROM", len(froms))
			}
			if !strings.HasPrefix(ins[froms[0]].args, "golang:1.26") {
				t.Errorf("builder %q, want golang:1.26", ins[froms[0]].args)
			}
			final := ins[froms[len(froms)-1]:]
			if base := strings.Fields(final[0].args)[0]; base != "scratch" && !strings.HasPrefix(base, "gcr.io/distroless/static") {
				t.Errorf("final image %s, want gcr.io/distroless/static* or scratch", base)
			}

			pkg := "./services/" + svc + "/cmd/" + svc
			built := false
			for _, in := range ins[:froms[len(froms)-1]] {
				if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
					built = true
					for _, want := range []string{"CGO_ENABLED=0", "-trimpath", pkg} {
						if !strings.Contains(in.args, want) {
							t.Errorf("go build lacks %s: %s", want, in.args)
						}
					}
				}
			}
			if !built {
				t.Errorf("no RUN go build")
			}
			if !isMainPackage(t, repoPath("services", svc, "cmd", svc)) {
				t.Errorf("%s is not a main package", pkg)
			}

			var user, entrypoint string
			var exposed []int
			for _, in := range final {
				switch in.cmd {
				case "USER":
					user = in.args
				case "ENTRYPOINT":
					entrypoint = in.args
				case "EXPOSE":
					for _, f := range strings.Fields(in.args) {
						p, err := strconv.Atoi(strings.TrimSuffix(f, "/tcp"))
						if err != nil {
							t.Errorf("EXPOSE %s", f)
						}
						exposed = append(exposed, p)
					}
				case "ENV":
					for _, kv := range strings.Fields(in.args) {
						if k, v, _ := strings.Cut(kv, "="); strings.HasSuffix(k, "_ADDR") {
							p, _ := strconv.Atoi(strings.TrimPrefix(v, ":"))
							if !slices.Contains(ports, p) {
								t.Errorf("ENV %s listens on a port the manifests do not use", kv)
							}
						}
					}
				}
			}
			uid, _, _ := strings.Cut(user, ":")
			if n, err := strconv.Atoi(uid); err != nil || n == 0 {
				t.Errorf("USER %q: want a numeric non-root user, which Kubernetes can check", user)
			}
			if entrypoint != `["/`+svc+`"]` {
				t.Errorf("ENTRYPOINT %s, want [\"/%s\"]", entrypoint, svc)
			}
			slices.Sort(exposed)
			slices.Sort(ports)
			if !slices.Equal(exposed, ports) {
				t.Errorf("EXPOSE %v, but the manifests use ports %v", exposed, ports)
			}
		})
	}

	ignore, err := os.ReadFile(repoPath(".dockerignore"))
	if err != nil || !slices.Contains(strings.Fields(string(ignore)), ".git") {
		t.Errorf("the repository root needs a .dockerignore that keeps .git out of the build context")
	}
}

func isMainPackage(t *testing.T, dir string) bool {
	files := parseDir(t, dir)
	return len(files) > 0 && files[0].Name.Name == "main"
}

// TestImagesHoldTheirCommands checks that a container that runs a binary other than its image's
// entrypoint (dev's simulator runs /sim from the workers image) finds it there: the image's
// Dockerfile builds that command's package and copies the binary to the path the container
// runs.
func TestImagesHoldTheirCommands(t *testing.T) {
	commands := 0
	for _, ov := range overlays {
		o := mustRender(t, ov.dir)
		for _, d := range o.deployments {
			c := d.Spec.Template.Spec.Containers[0]
			if len(c.Command) == 0 {
				continue
			}
			commands++
			svc, bin := service(c), binary(c)
			text, err := os.ReadFile(repoPath("services", svc, "Dockerfile"))
			if err != nil {
				t.Errorf("%s: Deployment %s: %v", ov.dir, d.Name, err)
				continue
			}
			ins := parseDockerfile(string(text))
			final := 0
			for i, in := range ins {
				if in.cmd == "FROM" {
					final = i
				}
			}
			pkg := "./services/" + svc + "/cmd/" + bin
			built, copied := false, false
			for i, in := range ins {
				fields := strings.Fields(in.args)
				switch {
				case i < final && in.cmd == "RUN" && strings.Contains(in.args, "go build"):
					built = built || slices.Contains(fields, pkg)
				case i > final && in.cmd == "COPY" && len(fields) >= 2:
					copied = copied || (fields[len(fields)-1] == c.Command[0] && strings.HasSuffix(fields[len(fields)-2], "/"+bin))
				}
			}
			if !built {
				t.Errorf("%s: Deployment %s runs %s, but services/%s/Dockerfile does not build %s", ov.dir, d.Name, c.Command[0], svc, pkg)
			}
			if !copied {
				t.Errorf("%s: Deployment %s runs %s, but services/%s/Dockerfile's image does not copy %s there", ov.dir, d.Name, c.Command[0], svc, bin)
			}
			if !isMainPackage(t, repoPath("services", svc, "cmd", bin)) {
				t.Errorf("%s is not a main package", pkg)
			}
		}
	}
	if commands == 0 {
		t.Error("no container runs a command of its own: the simulator's Deployment (overlays/dev) should")
	}
}
