package k8s

import (
	"fmt"
	"net"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// channels are the delivery channels; each has its own workers Deployment and stream.
var channels = []string{"ios", "android", "sms", "email", "inbox"}

// imagePrefix starts every Herald image: the rest is the service, whose Dockerfile is
// services/<service>/Dockerfile.
const imagePrefix = "ghcr.io/heraldhq/herald-"

// overlays are the installable variants and what each must be.
var overlays = []struct {
	dir       string
	namespace string
	// release: images are pinned to a release tag (or a digest).
	release bool
	// sim: every channel sends through the simulator; otherwise none does.
	sim            bool
	streamReplicas string
	minNotifiers   int32
	contacts       int32
}{
	{dir: "overlays/dev", namespace: "herald-dev", sim: true, streamReplicas: "1", minNotifiers: 1, contacts: 1},
	{dir: "overlays/prod", namespace: "herald", release: true, streamReplicas: "3", minNotifiers: 3, contacts: 2},
}

func TestOverlays(t *testing.T) {
	for _, ov := range overlays {
		t.Run(ov.dir, func(t *testing.T) {
			o := mustRender(t, ov.dir)
			for _, d := range o.deployments {
				if len(d.Spec.Template.Spec.Containers) == 0 {
					t.Fatalf("Deployment %s has no containers", d.Name)
				}
			}

			if want := map[string]bool{ov.namespace: true}; !mapsEqual(o.inNamespace, want) {
				t.Errorf("objects are in namespaces %v, want only %q", keys(o.inNamespace), ov.namespace)
			}
			if len(o.namespaces) != 1 || o.namespaces[0].Name != ov.namespace {
				t.Errorf("the overlay should create its namespace %q", ov.namespace)
			}
			// Credentials are created by hand or by a secret manager, never rendered from git.
			for _, s := range o.secrets {
				t.Errorf("Secret %s is rendered: secrets are referenced, never committed", s.Name)
			}

			for _, d := range o.deployments {
				checkPod(t, d, ov.release)
			}
			checkWorkers(t, o, ov.namespace)
			checkScaling(t, o, ov.minNotifiers, ov.contacts)
			checkServices(t, o, ov.sim)
			checkDisruptionBudgets(t, o)
			checkNetworkPolicies(t, o)
			checkNATSPolicy(t, o, ov.namespace)
			checkIngresses(t, o)
			checkConfig(t, o, ov.sim, ov.streamReplicas)
			checkSimulator(t, o, ov.namespace, ov.sim)
			checkSecretsDocumented(t, o)
		})
	}
}

// service returns the Herald service whose image c runs ("notifier", "contacts", "workers").
func service(c corev1.Container) string {
	name, _, _ := strings.Cut(strings.TrimPrefix(c.Image, imagePrefix), ":")
	name, _, _ = strings.Cut(name, "@")
	return name
}

// binary returns the program container c runs: its command's, or else its image's entrypoint,
// the service's own binary (docker_test.go checks it). The workers image also holds the provider
// simulator, "/sim", which dev runs as a Deployment of its own.
func binary(c corev1.Container) string {
	if len(c.Command) > 0 {
		return path.Base(c.Command[0])
	}
	return service(c)
}

var releaseTag = regexp.MustCompile(`^v\d+\.\d+\.\d+$`)

// checkPod checks what every Herald pod needs: Herald's image, probes on the health endpoints,
// requests and limits, and no root, no privilege escalation, no writable root filesystem.
func checkPod(t *testing.T, d *appsv1.Deployment, release bool) {
	t.Helper()
	spec := d.Spec.Template.Spec
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("Deployment %s: selector %v does not select its own pods", d.Name, d.Spec.Selector)
	}
	if d.Spec.Template.Labels["app.kubernetes.io/part-of"] != "herald" {
		t.Errorf("Deployment %s: pods lack app.kubernetes.io/part-of=herald, which the NetworkPolicies select", d.Name)
	}
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("Deployment %s: the pod must set runAsNonRoot and a non-zero runAsUser", d.Name)
	}
	if psc != nil && (psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault) {
		t.Errorf("Deployment %s: the pod should use the RuntimeDefault seccomp profile", d.Name)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("Deployment %s: Herald never calls the Kubernetes API; set automountServiceAccountToken: false", d.Name)
	}
	// The Services are named herald-*: their links would put HERALD_* variables in the pod,
	// where the binaries read their flags.
	if spec.EnableServiceLinks == nil || *spec.EnableServiceLinks {
		t.Errorf("Deployment %s: set enableServiceLinks: false, or the herald-* Services put HERALD_* variables in its pods", d.Name)
	}
	if len(spec.InitContainers) > 0 {
		t.Errorf("Deployment %s: has init containers, which this test does not check", d.Name)
	}
	if len(spec.Containers) != 1 {
		t.Errorf("Deployment %s: %d containers, want one", d.Name, len(spec.Containers))
	}
	for _, c := range spec.Containers {
		where := fmt.Sprintf("Deployment %s, container %s", d.Name, c.Name)
		checkImage(t, where, c.Image, release)

		probes := []struct {
			kind  string
			probe *corev1.Probe
			path  string
		}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}}
		for _, p := range probes {
			if p.probe == nil || p.probe.HTTPGet == nil {
				t.Errorf("%s: no HTTP %s probe", where, p.kind)
				continue
			}
			if p.probe.HTTPGet.Path != p.path {
				t.Errorf("%s: %s probe on %s, want %s", where, p.kind, p.probe.HTTPGet.Path, p.path)
			}
			if !hasPort(c, p.probe.HTTPGet.Port) {
				t.Errorf("%s: %s probe on port %s, which the container does not declare", where, p.kind, p.probe.HTTPGet.Port.String())
			}
		}

		for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, okReq := c.Resources.Requests[res]
			lim, okLim := c.Resources.Limits[res]
			switch {
			case !okReq || req.IsZero():
				t.Errorf("%s: no %s request", where, res)
			case !okLim || lim.IsZero():
				t.Errorf("%s: no %s limit", where, res)
			case req.Cmp(lim) > 0:
				t.Errorf("%s: %s request %s is above its limit %s", where, res, req.String(), lim.String())
			}
		}

		sc := c.SecurityContext
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("%s: needs allowPrivilegeEscalation: false, readOnlyRootFilesystem: true and capabilities.drop [ALL]", where)
		}
		if sc != nil && sc.RunAsUser != nil && *sc.RunAsUser == 0 {
			t.Errorf("%s: runs as root", where)
		}
	}
}

// checkImage checks that image is one of Herald's, from its registry, with an explicit tag: a
// release tag or a digest where release is set.
func checkImage(t *testing.T, where, image string, release bool) {
	t.Helper()
	rest, ok := strings.CutPrefix(image, imagePrefix)
	if !ok {
		t.Errorf("%s: image %s is not from %s*", where, image, imagePrefix)
		return
	}
	if _, err := os.Stat(repoPath("services", service(corev1.Container{Image: image}), "Dockerfile")); err != nil {
		t.Errorf("%s: image %s has no Dockerfile: %v", where, image, err)
	}
	name, digest, hasDigest := strings.Cut(rest, "@")
	_, tag, hasTag := strings.Cut(name, ":")
	switch {
	case hasDigest:
		if !strings.HasPrefix(digest, "sha256:") {
			t.Errorf("%s: image %s has a malformed digest", where, image)
		}
	case !hasTag || tag == "":
		t.Errorf("%s: image %s has no tag; an overlay must set one (images:)", where, image)
	case release && !releaseTag.MatchString(tag):
		t.Errorf("%s: image %s is not pinned to a release tag (vX.Y.Z) or a digest", where, image)
	}
}

func hasPort(c corev1.Container, port intstr.IntOrString) bool {
	for _, p := range c.Ports {
		if (port.Type == intstr.String && p.Name == port.StrVal) || (port.Type == intstr.Int && p.ContainerPort == port.IntVal) {
			return true
		}
	}
	return false
}

// checkWorkers checks that each channel has its own workers Deployment, started with
// --channels=<channel>, and a KEDA ScaledObject on that channel's stream and consumer.
func checkWorkers(t *testing.T, o *objects, namespace string) {
	t.Helper()
	workers := map[string]*appsv1.Deployment{}
	for _, d := range o.deployments {
		if binary(d.Spec.Template.Spec.Containers[0]) == "workers" {
			workers[d.Name] = d
		}
	}
	if len(workers) != len(channels) {
		t.Errorf("%d workers Deployments (%v), want one per channel %v", len(workers), keys(workers), channels)
	}
	for _, ch := range channels {
		d := workers["workers-"+ch]
		if d == nil {
			t.Errorf("no Deployment workers-%s", ch)
			continue
		}
		if got := flagValue(d.Spec.Template.Spec.Containers[0].Args, "channels"); got != ch {
			t.Errorf("Deployment workers-%s runs --channels=%q, want %q", ch, got, ch)
		}
		if d.Spec.Replicas != nil {
			t.Errorf("Deployment workers-%s sets replicas, which KEDA owns: every apply would reset the count", ch)
		}

		var sos []*scaledObject
		for _, so := range o.scaledObjects {
			if so.Spec.ScaleTargetRef.Name == d.Name {
				sos = append(sos, so)
			}
		}
		if len(sos) != 1 {
			t.Errorf("Deployment workers-%s has %d ScaledObjects, want 1", ch, len(sos))
			continue
		}
		so := sos[0]
		if k := so.Spec.ScaleTargetRef.Kind; k != "" && k != "Deployment" {
			t.Errorf("ScaledObject %s targets a %s", so.Metadata.Name, k)
		}
		if so.Spec.MinReplicaCount == nil || *so.Spec.MinReplicaCount < 1 || so.Spec.MaxReplicaCount == nil ||
			*so.Spec.MaxReplicaCount < *so.Spec.MinReplicaCount {
			t.Errorf("ScaledObject %s: want 1 <= minReplicaCount <= maxReplicaCount", so.Metadata.Name)
		}
		if len(so.Spec.Triggers) != 1 || so.Spec.Triggers[0].Type != "nats-jetstream" {
			t.Errorf("ScaledObject %s: want one nats-jetstream trigger", so.Metadata.Name)
			continue
		}
		md := so.Spec.Triggers[0].Metadata
		if want := "NOTIFY_" + strings.ToUpper(ch); md.Stream != want {
			t.Errorf("ScaledObject %s: stream %q, want %q", so.Metadata.Name, md.Stream, want)
		}
		if want := "workers-" + ch; md.Consumer != want {
			t.Errorf("ScaledObject %s: consumer %q, want %q", so.Metadata.Name, md.Consumer, want)
		}
		if md.Account != "$G" {
			t.Errorf("ScaledObject %s: account %q; NATS without accounts puts everything in \"$G\"", so.Metadata.Name, md.Account)
		}
		if n, err := strconv.Atoi(md.LagThreshold); err != nil || n <= 0 {
			t.Errorf("ScaledObject %s: lagThreshold %q is not a positive integer", so.Metadata.Name, md.LagThreshold)
		}
		// KEDA runs in its own namespace: the endpoint must name NATS's namespace, which is
		// the overlay's.
		host, port, err := net.SplitHostPort(md.NATSServerMonitoringEndpoint)
		if want := "nats-headless." + namespace + ".svc.cluster.local"; err != nil || host != want || port != "8222" {
			t.Errorf("ScaledObject %s: natsServerMonitoringEndpoint %q, want %s:8222", so.Metadata.Name, md.NATSServerMonitoringEndpoint, want)
		}
	}
	for _, so := range o.scaledObjects {
		if workers[so.Spec.ScaleTargetRef.Name] == nil {
			t.Errorf("ScaledObject %s targets %s, which is not a workers Deployment", so.Metadata.Name, so.Spec.ScaleTargetRef.Name)
		}
	}
}

// flagValue returns the value of --name in args ("--name=v" or "--name v").
func flagValue(args []string, name string) string {
	for i, a := range args {
		a = "-" + strings.TrimLeft(a, "-")
		if v, ok := strings.CutPrefix(a, "-"+name+"="); ok {
			return v
		}
		if a == "-"+name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// checkScaling checks the notifier's HorizontalPodAutoscaler and the contacts replicas.
func checkScaling(t *testing.T, o *objects, minNotifiers, contacts int32) {
	t.Helper()
	if len(o.hpas) != 1 {
		t.Fatalf("%d HorizontalPodAutoscalers, want 1 (the notifier's)", len(o.hpas))
	}
	h := o.hpas[0]
	if r := h.Spec.ScaleTargetRef; r.Kind != "Deployment" || r.Name != "notifier" || r.APIVersion != "apps/v1" {
		t.Errorf("HorizontalPodAutoscaler %s targets %s %s %s, want apps/v1 Deployment notifier", h.Name, r.APIVersion, r.Kind, r.Name)
	}
	if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas != minNotifiers || h.Spec.MaxReplicas < minNotifiers {
		t.Errorf("HorizontalPodAutoscaler %s: minReplicas %v, maxReplicas %d; want min %d", h.Name, h.Spec.MinReplicas, h.Spec.MaxReplicas, minNotifiers)
	}
	cpu := false
	for _, m := range h.Spec.Metrics {
		cpu = cpu || (m.Resource != nil && m.Resource.Name == corev1.ResourceCPU && m.Resource.Target.AverageUtilization != nil)
	}
	if !cpu {
		t.Errorf("HorizontalPodAutoscaler %s does not scale on CPU utilization", h.Name)
	}
	for _, d := range o.deployments {
		switch d.Name {
		case "notifier":
			if d.Spec.Replicas != nil {
				t.Errorf("Deployment notifier sets replicas, which the HorizontalPodAutoscaler owns")
			}
		case "contacts":
			if d.Spec.Replicas == nil || *d.Spec.Replicas != contacts {
				t.Errorf("Deployment contacts: replicas %v, want %d", d.Spec.Replicas, contacts)
			}
		}
	}
}

// checkServices checks that every Service selects pods, that its target ports are ports those
// pods declare, and that the notifier, contacts and workers Services exist, and the simulator's
// where the overlay sends through it.
func checkServices(t *testing.T, o *objects, sim bool) {
	t.Helper()
	want := map[string][]int32{"herald-notifier": {7400, 7480}, "herald-contacts": {7401, 7481}, "herald-workers": {7482}}
	if sim {
		want["herald-sim"] = []int32{7490}
	}
	for _, s := range o.services {
		if len(s.Spec.Selector) == 0 {
			t.Errorf("Service %s selects nothing", s.Name)
			continue
		}
		var selected []*appsv1.Deployment
		for _, d := range o.deployments {
			if labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
				selected = append(selected, d)
			}
		}
		if len(selected) == 0 {
			t.Errorf("Service %s selects no Deployment's pods", s.Name)
		}
		var ports []int32
		for _, p := range s.Spec.Ports {
			ports = append(ports, p.Port)
			for _, d := range selected {
				if !hasPort(d.Spec.Template.Spec.Containers[0], p.TargetPort) {
					t.Errorf("Service %s port %s targets %s, which Deployment %s does not declare", s.Name, p.Name, p.TargetPort.String(), d.Name)
				}
			}
		}
		if w, ok := want[s.Name]; ok && !slices.Equal(ports, w) {
			t.Errorf("Service %s has ports %v, want %v", s.Name, ports, w)
		}
		delete(want, s.Name)
	}
	for name := range want {
		t.Errorf("no Service %s", name)
	}
}

// checkDisruptionBudgets checks that every Deployment has one PodDisruptionBudget, by
// maxUnavailable: minAvailable would block node drains at one replica.
func checkDisruptionBudgets(t *testing.T, o *objects) {
	t.Helper()
	for _, d := range o.deployments {
		n := 0
		for _, p := range o.pdbs {
			sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
			if err == nil && !sel.Empty() && sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				n++
				if p.Spec.MaxUnavailable == nil || p.Spec.MinAvailable != nil {
					t.Errorf("PodDisruptionBudget %s should set maxUnavailable only", p.Name)
				}
			}
		}
		if n != 1 {
			t.Errorf("Deployment %s is covered by %d PodDisruptionBudgets, want 1", d.Name, n)
		}
	}
}

// checkNetworkPolicies checks that Herald's pods are denied by default and that every port
// they declare, and the egress they need, is then allowed for them.
func checkNetworkPolicies(t *testing.T, o *objects) {
	t.Helper()
	herald := labels.Set{"app.kubernetes.io/part-of": "herald"}
	deny := false
	for _, np := range o.netpols {
		if selects(np, herald) && len(np.Spec.Ingress) == 0 && len(np.Spec.Egress) == 0 &&
			slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) &&
			slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
			deny = true
		}
	}
	if !deny {
		t.Errorf("no default-deny NetworkPolicy (ingress and egress) over app.kubernetes.io/part-of=herald")
	}
	for _, d := range o.deployments {
		pod := labels.Set(d.Spec.Template.Labels)
		for _, p := range d.Spec.Template.Spec.Containers[0].Ports {
			if !allows(o.netpols, pod, networkingv1.PolicyTypeIngress, p.ContainerPort) {
				t.Errorf("Deployment %s: no NetworkPolicy lets anything reach port %d (%s)", d.Name, p.ContainerPort, p.Name)
			}
		}
		var need []int32
		switch binary(d.Spec.Template.Spec.Containers[0]) {
		case "sim": // connects to nothing
		case "contacts":
			need = []int32{53, 5432, 4222}
		case "workers":
			need = []int32{53, 5432, 4222, 7401, 443}
		default:
			need = []int32{53, 5432, 4222, 7401}
		}
		for _, port := range need {
			if !allows(o.netpols, pod, networkingv1.PolicyTypeEgress, port) {
				t.Errorf("Deployment %s: no NetworkPolicy lets it connect to port %d", d.Name, port)
			}
		}
	}
	// The apps' backends call the API over gRPC or HTTP/JSON; a pod of another, unlabelled
	// namespace reaches neither.
	caller := labels.Set{"app.kubernetes.io/name": "shop"}
	client := labels.Set{"kubernetes.io/metadata.name": "shop", "heraldhq.io/client": "true"}
	stranger := labels.Set{"kubernetes.io/metadata.name": "elsewhere"}
	for service, ports := range map[string][]int32{"notifier": {7400, 7480}, "contacts": {7401, 7481}} {
		var over []*networkingv1.NetworkPolicy
		for _, np := range o.netpols {
			if selects(np, labels.Set{"app.kubernetes.io/name": service, "app.kubernetes.io/part-of": "herald"}) {
				over = append(over, np)
			}
		}
		for _, port := range ports {
			if !admits(over, "herald", caller, client, port) {
				t.Errorf("a calling app's pod cannot reach the %s API on port %d", service, port)
			}
			if admits(over, "herald", caller, stranger, port) {
				t.Errorf("a pod of an unlabelled namespace reaches the %s API on port %d", service, port)
			}
		}
	}
}

// The labels the NATS Helm chart (1.x, release "nats") gives its servers and its nats-box.
var (
	natsServer = labels.Set{"app.kubernetes.io/name": "nats", "app.kubernetes.io/instance": "nats", "app.kubernetes.io/component": "nats"}
	natsBox    = labels.Set{"app.kubernetes.io/name": "nats", "app.kubernetes.io/instance": "nats", "app.kubernetes.io/component": "nats-box"}
)

// checkNATSPolicy checks that NATS, which runs without authentication, takes connections only
// from whom Herald means: its clients port from Herald's pods (and nats-box), its routes port
// from the other NATS servers, its monitoring port from KEDA and Prometheus - and nothing from
// any other pod, here or in another namespace, on any port.
func checkNATSPolicy(t *testing.T, o *objects, namespace string) {
	t.Helper()
	var over []*networkingv1.NetworkPolicy
	for _, np := range o.netpols {
		if selects(np, natsServer) && slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
			over = append(over, np)
		}
	}
	if len(over) == 0 {
		t.Errorf("no NetworkPolicy covers the NATS servers (%v): any pod in the cluster can publish to them", natsServer)
		return
	}
	here := labels.Set{"kubernetes.io/metadata.name": namespace}
	type peer struct {
		name      string
		pod, ns   labels.Set
		may, mayN []int32 // ports it may reach; ports it must not
	}
	peers := []peer{
		{name: "NATS server", pod: natsServer, ns: here, may: []int32{6222}},
		{name: "nats-box", pod: natsBox, ns: here, may: []int32{4222}, mayN: []int32{6222, 8222}},
		{name: "KEDA", pod: labels.Set{"app": "keda-operator"}, ns: labels.Set{"kubernetes.io/metadata.name": "keda"},
			may: []int32{8222}, mayN: []int32{4222, 6222}},
		{name: "Prometheus", pod: labels.Set{"app.kubernetes.io/name": "prometheus"}, ns: labels.Set{"kubernetes.io/metadata.name": "monitoring"},
			may: []int32{8222}, mayN: []int32{4222, 6222}},
		{name: "another pod of the namespace", pod: labels.Set{"app.kubernetes.io/name": "herald-pg"}, ns: here,
			mayN: []int32{4222, 6222, 8222, 7422, 7222}},
		{name: "a pod without labels", pod: labels.Set{}, ns: here, mayN: []int32{4222, 6222, 8222}},
		{name: "a calling app's pod", pod: labels.Set{"app.kubernetes.io/name": "shop"},
			ns: labels.Set{"kubernetes.io/metadata.name": "shop", "heraldhq.io/client": "true"}, mayN: []int32{4222, 6222, 8222}},
		{name: "a Herald-looking pod of another namespace", pod: labels.Set{"app.kubernetes.io/part-of": "herald"},
			ns: labels.Set{"kubernetes.io/metadata.name": "elsewhere"}, mayN: []int32{4222, 6222, 8222}},
	}
	for _, d := range o.deployments {
		peers = append(peers, peer{name: "Deployment " + d.Name, pod: labels.Set(d.Spec.Template.Labels), ns: here,
			may: []int32{4222}, mayN: []int32{6222, 8222}})
	}
	for _, p := range peers {
		for _, port := range p.may {
			if !admits(over, namespace, p.pod, p.ns, port) {
				t.Errorf("NATS: %s cannot reach port %d", p.name, port)
			}
		}
		for _, port := range p.mayN {
			if admits(over, namespace, p.pod, p.ns, port) {
				t.Errorf("NATS: %s can reach port %d", p.name, port)
			}
		}
	}
}

// portAllowed reports whether a policy rule's ports let in TCP port: no ports means every port.
func portAllowed(ports []networkingv1.NetworkPolicyPort, port int32) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		if p.Port == nil || p.Port.Type == intstr.Int && p.Port.IntVal <= port && port <= ptrOr(p.EndPort, p.Port.IntVal) {
			return true
		}
	}
	return false
}

// admits reports whether a policy among nps (all in namespace) lets a pod labelled pod, in a
// namespace labelled ns, connect to TCP port, following NetworkPolicy's rules: no ports means
// every port, no peers means every source, a podSelector alone means pods of the policy's own
// namespace, and an ipBlock lets in addresses, whatever pod holds them.
func admits(nps []*networkingv1.NetworkPolicy, namespace string, pod, ns labels.Set, port int32) bool {
	matches := func(s *metav1.LabelSelector, set labels.Set) bool {
		sel, err := metav1.LabelSelectorAsSelector(s)
		return err == nil && sel.Matches(set)
	}
	for _, np := range nps {
		for _, r := range np.Spec.Ingress {
			if !portAllowed(r.Ports, port) {
				continue
			}
			if len(r.From) == 0 {
				return true
			}
			for _, f := range r.From {
				switch {
				case f.IPBlock != nil:
					return true
				case f.NamespaceSelector == nil && f.PodSelector != nil:
					if ns["kubernetes.io/metadata.name"] == namespace && matches(f.PodSelector, pod) {
						return true
					}
				case f.NamespaceSelector != nil:
					if matches(f.NamespaceSelector, ns) && (f.PodSelector == nil || matches(f.PodSelector, pod)) {
						return true
					}
				}
			}
		}
	}
	return false
}

func ptrOr(p *int32, v int32) int32 {
	if p != nil {
		return *p
	}
	return v
}

// selects reports whether np applies to pods labelled pod.
func selects(np *networkingv1.NetworkPolicy, pod labels.Set) bool {
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	return err == nil && sel.Matches(pod)
}

// allows reports whether some policy over pod allows traffic of type dir on TCP port: to the
// pod for ingress, from it for egress.
func allows(nps []*networkingv1.NetworkPolicy, pod labels.Set, dir networkingv1.PolicyType, port int32) bool {
	for _, np := range nps {
		if !selects(np, pod) || !slices.Contains(np.Spec.PolicyTypes, dir) {
			continue
		}
		var portLists [][]networkingv1.NetworkPolicyPort
		if dir == networkingv1.PolicyTypeIngress {
			for _, r := range np.Spec.Ingress {
				portLists = append(portLists, r.Ports)
			}
		} else {
			for _, r := range np.Spec.Egress {
				portLists = append(portLists, r.Ports)
			}
		}
		for _, ports := range portLists {
			for _, p := range ports {
				if p.Port != nil && p.Port.Type == intstr.Int && p.Port.IntVal == port {
					return true
				}
			}
		}
	}
	return false
}

// checkIngresses checks that the public Ingress exposes exact paths only, none of them an
// operator's page.
func checkIngresses(t *testing.T, o *objects) {
	t.Helper()
	private := []string{"/metrics", "/status", "/healthz", "/readyz"}
	services := map[string]*corev1.Service{}
	for _, s := range o.services {
		services[s.Name] = s
	}
	for _, ing := range o.ingresses {
		for _, r := range ing.Spec.Rules {
			if r.HTTP == nil {
				continue
			}
			for _, p := range r.HTTP.Paths {
				// The prefixes: short links, under which the notifier serves only GET /l/{code}, and
				// the in-app inbox, under which it serves only InboxService (a user token or an app
				// key on every call) and the live feed.
				prefix := (p.Path == "/l" || p.Path == "/v1/inbox") && b2s(p.Backend.Service) == "herald-notifier" &&
					p.PathType != nil && *p.PathType == networkingv1.PathTypePrefix
				if !prefix && (p.PathType == nil || *p.PathType != networkingv1.PathTypeExact) {
					t.Errorf("Ingress %s: path %s is not Exact, so it could expose more than it names", ing.Name, p.Path)
				}
				if slices.Contains(private, p.Path) {
					t.Errorf("Ingress %s exposes %s", ing.Name, p.Path)
				}
				b := p.Backend.Service
				if b == nil || services[b.Name] == nil {
					t.Errorf("Ingress %s: path %s has no Service backend in the overlay", ing.Name, p.Path)
					continue
				}
				found := false
				for _, sp := range services[b.Name].Spec.Ports {
					found = found || (b.Port.Name != "" && sp.Name == b.Port.Name) || (b.Port.Number != 0 && sp.Port == b.Port.Number)
				}
				if !found {
					t.Errorf("Ingress %s: path %s goes to a port Service %s does not have", ing.Name, p.Path, b.Name)
				}
			}
		}
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func mapsEqual(a, b map[string]bool) bool {
	return slices.Equal(keys(a), keys(b))
}

// b2s names an Ingress backend's Service ("" for none).
func b2s(b *networkingv1.IngressServiceBackend) string {
	if b == nil {
		return ""
	}
	return b.Name
}
