package k8s

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// repoPath returns a path in the repository, from this package's directory (deploy/k8s).
func repoPath(elem ...string) string {
	return filepath.Join(append([]string{"..", ".."}, elem...)...)
}

// env returns the environment container c of d starts with: its ConfigMaps, then its own
// variables. A variable from a Secret reads as "secret:<name>/<key>".
func env(t *testing.T, o *objects, d *appsv1.Deployment, c corev1.Container) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			cm := o.configMaps[from.ConfigMapRef.Name]
			if cm == nil {
				t.Errorf("Deployment %s reads ConfigMap %s, which the overlay does not render", d.Name, from.ConfigMapRef.Name)
				continue
			}
			for k, v := range cm.Data {
				out[from.Prefix+k] = v
			}
		default:
			t.Errorf("Deployment %s: envFrom other than a ConfigMap; secrets are mounted or referenced by key", d.Name)
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			out[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			out[e.Name] = "secret:" + e.ValueFrom.SecretKeyRef.Name + "/" + e.ValueFrom.SecretKeyRef.Key
		default:
			out[e.Name] = "(field)"
		}
	}
	return out
}

// listenFlags names, for each binary that is not a service's own, the flag that opens each of
// its ports; a service's own binary opens its ports named http and grpc with --http-addr and
// --grpc-addr.
var listenFlags = map[string]map[string]string{
	"sim": {"http": "addr"},
}

// checkConfig checks the HERALD_* settings and the flags of every container: each names a flag
// its binary has, the *_FILE ones point into a mounted Secret, the listen addresses match the
// declared ports, and the settings the overlay is about have the values it promises.
func checkConfig(t *testing.T, o *objects, sim bool, streamReplicas string) {
	t.Helper()
	all := map[string]map[string]string{}
	for _, d := range o.deployments {
		c := d.Spec.Template.Spec.Containers[0]
		svc, bin := service(c), binary(c)
		flags := flagNames(t, svc, bin)
		vars := env(t, o, d, c)
		all[d.Name] = vars
		for name, value := range vars {
			flag, ok := strings.CutPrefix(name, "HERALD_")
			if !ok {
				continue
			}
			flag = strings.ToLower(strings.ReplaceAll(flag, "_", "-"))
			if !flags[flag] {
				t.Errorf("Deployment %s sets %s, but %s has no --%s", d.Name, name, bin, flag)
			}
			if strings.HasSuffix(flag, "-file") {
				checkMounted(t, d, c, name, value)
			}
		}
		for _, a := range c.Args {
			name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			if strings.HasPrefix(a, "-") && !flags[name] {
				t.Errorf("Deployment %s passes %s, but %s has no --%s", d.Name, a, bin, name)
			}
		}

		// The binaries listen on loopback unless told otherwise.
		ports := map[string]string{"http": "http-addr", "grpc": "grpc-addr"}
		if bin != svc {
			ports = listenFlags[bin]
		}
		for _, p := range c.Ports {
			flag := ports[p.Name]
			if flag == "" {
				t.Errorf("Deployment %s declares port %s, which no setting opens", d.Name, p.Name)
				continue
			}
			// A flag passed as an argument wins over its variable.
			got, from := flagValue(c.Args, flag), "--"+flag
			if got == "" {
				from = "HERALD_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
				got = vars[from]
			}
			if want := ":" + strconv.Itoa(int(p.ContainerPort)); got != want {
				t.Errorf("Deployment %s: %s=%q, want %q to match its %s port", d.Name, from, got, want, p.Name)
			}
		}
		if bin != svc {
			continue // a helper of the image (the simulator): none of the service's settings
		}
		if vars["HERALD_DATABASE_URL"] == "" {
			t.Errorf("Deployment %s has no HERALD_DATABASE_URL", d.Name)
		}
		if got := vars["HERALD_STREAM_REPLICAS"]; got != streamReplicas {
			t.Errorf("Deployment %s: HERALD_STREAM_REPLICAS=%q, want %q", d.Name, got, streamReplicas)
		}
		if svc == "workers" {
			for _, ch := range channels {
				if ch == "inbox" {
					continue // stored in PostgreSQL: no provider to choose
				}
				p := vars["HERALD_"+strings.ToUpper(ch)+"_PROVIDER"]
				if sim && p != "sim" {
					t.Errorf("Deployment %s: %s provider %q, want the simulator", d.Name, ch, p)
				}
				if !sim && (p == "" || p == "sim") {
					t.Errorf("Deployment %s: %s provider %q, want a real one", d.Name, ch, p)
				}
			}
		}
	}

	// Services that must agree with each other.
	same := func(what string, a, b string, va, vb string) {
		if va == "" || va != vb {
			t.Errorf("%s: %s=%q but %s=%q", what, a, va, b, vb)
		}
	}
	for _, ch := range channels {
		w := "workers-" + ch
		same("the streams must have one replication factor", "notifier", w,
			all["notifier"]["HERALD_STREAM_REPLICAS"], all[w]["HERALD_STREAM_REPLICAS"])
		same("every service talks to the same NATS", "notifier", w,
			all["notifier"]["HERALD_NATS_URL"], all[w]["HERALD_NATS_URL"])
		same("the unsubscribe links point at the contacts pages", "contacts HERALD_PUBLIC_URL", w+" HERALD_UNSUBSCRIBE_URL",
			all["contacts"]["HERALD_PUBLIC_URL"], all[w]["HERALD_UNSUBSCRIBE_URL"])
	}
	if cb := all["workers-sms"]["HERALD_TWILIO_STATUS_CALLBACK"]; cb != "" {
		same("Twilio's status callbacks go to the notifier's webhook", "workers-sms HERALD_TWILIO_STATUS_CALLBACK", "notifier HERALD_PUBLIC_URL + /webhooks/twilio/status",
			cb, all["notifier"]["HERALD_PUBLIC_URL"]+"/webhooks/twilio/status")
	}
}

// checkMounted checks that the file a *_FILE variable names is in a Secret volume mounted in c.
func checkMounted(t *testing.T, d *appsv1.Deployment, c corev1.Container, name, path string) {
	t.Helper()
	for _, m := range c.VolumeMounts {
		rel, ok := strings.CutPrefix(path, m.MountPath+"/")
		if !ok {
			continue
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name != m.Name {
				continue
			}
			if v.Secret == nil {
				t.Errorf("Deployment %s: %s=%s is on volume %s, which is not a Secret", d.Name, name, path, v.Name)
				return
			}
			if len(v.Secret.Items) == 0 {
				return
			}
			for _, it := range v.Secret.Items {
				if it.Path == rel {
					return
				}
			}
			t.Errorf("Deployment %s: %s=%s, but Secret %s is mounted without %s", d.Name, name, path, v.Secret.SecretName, rel)
			return
		}
	}
	t.Errorf("Deployment %s: %s=%s is not in any mounted volume", d.Name, name, path)
}

// checkSecretsDocumented checks that every Secret the pods use, and every key of it, is in
// deploy/README.md's table of Secrets, since nothing in git creates them.
func checkSecretsDocumented(t *testing.T, o *objects) {
	t.Helper()
	readme, err := os.ReadFile(repoPath("deploy", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(readme), "\n")
	documented := func(name, key string) bool {
		for _, l := range lines {
			if strings.HasPrefix(l, "|") && strings.Contains(l, "`"+name+"`") && strings.Contains(l, "`"+key+"`") {
				return true
			}
		}
		return false
	}
	for _, d := range o.deployments {
		spec := d.Spec.Template.Spec
		for _, e := range spec.Containers[0].Env {
			if r := e.ValueFrom; r != nil && r.SecretKeyRef != nil && !documented(r.SecretKeyRef.Name, r.SecretKeyRef.Key) {
				t.Errorf("Deployment %s uses Secret %s key %s, which deploy/README.md's table does not list", d.Name, r.SecretKeyRef.Name, r.SecretKeyRef.Key)
			}
		}
		for _, v := range spec.Volumes {
			if v.Secret == nil {
				continue
			}
			if len(v.Secret.Items) == 0 {
				t.Errorf("Deployment %s mounts all of Secret %s; mount the keys it uses (items)", d.Name, v.Secret.SecretName)
			}
			for _, it := range v.Secret.Items {
				if !documented(v.Secret.SecretName, it.Key) {
					t.Errorf("Deployment %s mounts Secret %s key %s, which deploy/README.md's table does not list", d.Name, v.Secret.SecretName, it.Key)
				}
			}
		}
	}
}

var flagCache sync.Map // service/binary -> map[string]bool

// flagNames returns the flags of binary bin of service svc, read from the source of its main
// package (services/<svc>/cmd/<bin>), for the service's own binary of its daemon package, and
// of internal/cli's Run where main runs through it. Reading the source keeps this module free
// of the services' modules.
func flagNames(t *testing.T, svc, bin string) map[string]bool {
	t.Helper()
	if f, ok := flagCache.Load(svc + "/" + bin); ok {
		return f.(map[string]bool)
	}
	server, client := tlsFlags(t)
	flags := map[string]bool{}
	dirs := []string{repoPath("services", svc, "cmd", bin)}
	if bin == svc {
		dirs = append(dirs, repoPath("services", svc, "daemon"))
	}
	for _, dir := range dirs {
		for _, f := range parseDir(t, dir) {
			ast.Inspect(f, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return flagDefs(n, flags)
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				pkg, _ := sel.X.(*ast.Ident)
				switch {
				case sel.Sel.Name == "RegisterServerFlags":
					for _, name := range server {
						flags[name] = true
					}
				case sel.Sel.Name == "RegisterClientFlags":
					if len(call.Args) > 2 {
						prefix, _ := stringLit(call.Args[2])
						for _, name := range client {
							flags[prefix+name] = true
						}
					}
				case pkg != nil && pkg.Name == "cli" && (sel.Sel.Name == "Main" || sel.Sel.Name == "Run"):
					for _, name := range cliFlags(t) {
						flags[name] = true
					}
				default:
					return flagDefs(n, flags)
				}
				return true
			})
		}
	}
	if len(flags) == 0 {
		t.Fatalf("found no flags for %s", bin)
	}
	flagCache.Store(svc+"/"+bin, flags)
	return flags
}

// flagDefs adds to flags the flag n defines, if it defines one: a flag.FlagSet method call, or
// a cli.SecretFile's Flag. It returns true, to go on inspecting.
func flagDefs(n ast.Node, flags map[string]bool) bool {
	switch n := n.(type) {
	case *ast.CallExpr:
		if sel, ok := n.Fun.(*ast.SelectorExpr); ok {
			if name, ok := flagDef(n, sel.Sel.Name); ok {
				flags[name] = true
			}
		}
	case *ast.KeyValueExpr:
		if key, ok := n.Key.(*ast.Ident); ok && key.Name == "Flag" {
			if name, ok := stringLit(n.Value); ok {
				flags[name] = true
			}
		}
	}
	return true
}

// cliFlags returns the flags internal/cli's Run adds to every service's own.
func cliFlags(t *testing.T) []string {
	t.Helper()
	flags := map[string]bool{}
	for _, f := range parseDir(t, repoPath("internal", "cli")) {
		for _, decl := range f.Decls {
			if fn, ok := decl.(*ast.FuncDecl); ok && fn.Name.Name == "Run" {
				ast.Inspect(fn.Body, func(n ast.Node) bool { return flagDefs(n, flags) })
			}
		}
	}
	if len(flags) == 0 {
		t.Fatal("found no flags in internal/cli's Run")
	}
	return keys(flags)
}

// flagDef returns the name a flag.FlagSet method call defines, if it is one: the methods that
// take (name, value, usage) and those that take (pointer, name, value, usage).
func flagDef(call *ast.CallExpr, method string) (string, bool) {
	switch method {
	case "String", "Int", "Int64", "Uint", "Uint64", "Bool", "Duration", "Float64", "Func", "BoolFunc", "Var":
		i := 0
		if method == "Var" {
			i = 1
		}
		if len(call.Args) == 3 {
			return stringLit(call.Args[i])
		}
	case "StringVar", "IntVar", "Int64Var", "UintVar", "Uint64Var", "BoolVar", "DurationVar", "Float64Var", "TextVar":
		if len(call.Args) == 4 {
			return stringLit(call.Args[1])
		}
	}
	return "", false
}

// tlsFlags returns the flags internal/tlsconfig registers: the server's names, and the client's
// names without their prefix.
func tlsFlags(t *testing.T) (server, client []string) {
	t.Helper()
	for _, f := range parseDir(t, repoPath("internal", "tlsconfig")) {
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || (fn.Name.Name != "RegisterServerFlags" && fn.Name.Name != "RegisterClientFlags") {
				continue
			}
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok || len(call.Args) != 4 {
					return true
				}
				arg := call.Args[1]
				if bin, ok := arg.(*ast.BinaryExpr); ok && bin.Op == token.ADD {
					arg = bin.Y // prefix + "tls-ca"
				}
				if name, ok := stringLit(arg); ok {
					if fn.Name.Name == "RegisterServerFlags" {
						server = append(server, name)
					} else {
						client = append(client, name)
					}
				}
				return true
			})
		}
	}
	return server, client
}

func parseDir(t *testing.T, dir string) []*ast.File {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	fset := token.NewFileSet()
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, e.Name()), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	return files
}

func stringLit(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

func TestFlagNamesReadsTheSource(t *testing.T) {
	// A sanity check of the parser: flags from RegisterFlags, from main (its secret files), from
	// internal/cli's Run, and from tlsconfig.
	for bin, want := range map[string][]string{
		"notifier/notifier": {"database-url", "log-level", "bootstrap-key-file", "tls-cert", "contacts-tls-ca", "otlp-endpoint"},
		"contacts/contacts": {"link-keys-file", "grpc-addr", "tls-client-ca", "database-url-file", "pprof-addr"},
		"workers/workers":   {"channels", "sendgrid-api-key-file", "contacts-key-file", "max-backoff", "otlp-insecure"},
		"workers/sim":       {"addr"},
	} {
		svc, name, _ := strings.Cut(bin, "/")
		flags := flagNames(t, svc, name)
		for _, name := range want {
			if !flags[name] {
				t.Errorf("%s: flag --%s not found in %s", bin, name, fmt.Sprint(keys(flags)))
			}
		}
	}
	if flagNames(t, "workers", "sim")["channels"] {
		t.Error("the simulator's flags include the workers' daemon's")
	}
}
