package k8s

import (
	"net/url"
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

// checkSimulator checks, where the overlay sends through the provider simulator, that the
// workers reach it: one Deployment runs it, and the host and port of every workers
// Deployment's HERALD_SIM_URL are a Service of the overlay that selects the simulator's pods
// (and no other) and targets the port it listens on, which the NetworkPolicies let the workers'
// pods reach, and no one else (its page shows every message). Where the overlay sends through
// real providers, nothing runs the simulator.
func checkSimulator(t *testing.T, o *objects, namespace string, sim bool) {
	t.Helper()
	var sims []*appsv1.Deployment
	for _, d := range o.deployments {
		if binary(d.Spec.Template.Spec.Containers[0]) == "sim" {
			sims = append(sims, d)
		}
	}
	if !sim {
		for _, d := range sims {
			t.Errorf("Deployment %s runs the simulator, but this overlay sends through real providers", d.Name)
		}
		return
	}
	if len(sims) != 1 {
		t.Errorf("%d Deployments run the simulator, want 1", len(sims))
		return
	}
	d := sims[0]
	c := d.Spec.Template.Spec.Containers[0]
	if r := ptrOr(d.Spec.Replicas, 1); r != 1 {
		t.Errorf("Deployment %s: %d replicas, want 1: the simulator keeps its messages in memory, so the page of one replica would miss the others'", d.Name, r)
	}
	simPod := labels.Set(d.Spec.Template.Labels)
	here := labels.Set{"kubernetes.io/metadata.name": namespace}
	services := map[string]*corev1.Service{}
	for _, s := range o.services {
		services[s.Name] = s
	}

	var workers []*appsv1.Deployment
	for _, w := range o.deployments {
		if binary(w.Spec.Template.Spec.Containers[0]) == "workers" {
			workers = append(workers, w)
		}
	}
	for _, w := range workers {
		raw := env(t, o, w, w.Spec.Template.Spec.Containers[0])["HERALD_SIM_URL"]
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "http" || u.Port() == "" || strings.Trim(u.Path, "/") != "" {
			t.Errorf("Deployment %s: HERALD_SIM_URL=%q, want http://<service>:<port>", w.Name, raw)
			continue
		}
		name := u.Hostname()
		for _, suffix := range []string{".svc.cluster.local", ".svc", "." + namespace} {
			name = strings.TrimSuffix(name, suffix)
		}
		s := services[name]
		if s == nil || strings.Contains(name, ".") {
			t.Errorf("Deployment %s: HERALD_SIM_URL=%q names %s, which is not a Service of the overlay", w.Name, raw, u.Hostname())
			continue
		}
		if !labels.SelectorFromSet(s.Spec.Selector).Matches(simPod) {
			t.Errorf("Service %s, which HERALD_SIM_URL names, does not select the simulator's pods", s.Name)
			continue
		}
		for _, other := range o.deployments {
			if other != d && labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(other.Spec.Template.Labels)) {
				t.Errorf("Service %s, which HERALD_SIM_URL names, selects Deployment %s's pods too", s.Name, other.Name)
			}
		}
		var sp *corev1.ServicePort
		for i := range s.Spec.Ports {
			if strconv.Itoa(int(s.Spec.Ports[i].Port)) == u.Port() {
				sp = &s.Spec.Ports[i]
			}
		}
		if sp == nil {
			t.Errorf("Deployment %s: HERALD_SIM_URL=%q, but Service %s has no port %s", w.Name, raw, s.Name, u.Port())
			continue
		}
		port, ok := containerPort(c, sp.TargetPort)
		if !ok {
			t.Errorf("Service %s port %d targets %s, which the simulator's container does not declare", s.Name, sp.Port, sp.TargetPort.String())
			continue
		}
		if listen := flagValue(c.Args, "addr"); listen != ":"+strconv.Itoa(int(port)) {
			t.Errorf("Deployment %s listens on --addr=%q, but Service %s sends to its port %d", d.Name, listen, s.Name, port)
		}
		workerPod := labels.Set(w.Spec.Template.Labels)
		if !connects(o.netpols, namespace, workerPod, simPod, port) {
			t.Errorf("Deployment %s: no NetworkPolicy lets its pods connect to the simulator's on port %d", w.Name, port)
		}
		if !admits(ingressOver(o.netpols, simPod), namespace, workerPod, here, port) {
			t.Errorf("Deployment %s: no NetworkPolicy lets its pods into the simulator's on port %d", w.Name, port)
		}
	}

	// The simulator's page shows every message's address and content: no one else gets in.
	type peer struct {
		name    string
		pod, ns labels.Set
	}
	peers := []peer{
		{"a pod without labels", labels.Set{}, here},
		{"a calling app's pod", labels.Set{"app.kubernetes.io/name": "shop"},
			labels.Set{"kubernetes.io/metadata.name": "shop", "heraldhq.io/client": "true"}},
		{"the ingress controller", labels.Set{"app.kubernetes.io/name": "ingress-nginx"},
			labels.Set{"kubernetes.io/metadata.name": "ingress-nginx", "heraldhq.io/ingress": "true"}},
	}
	for _, other := range o.deployments {
		if b := binary(other.Spec.Template.Spec.Containers[0]); b != "workers" && b != "sim" {
			peers = append(peers, peer{"Deployment " + other.Name, labels.Set(other.Spec.Template.Labels), here})
		}
	}
	for _, p := range c.Ports {
		for _, peer := range peers {
			if admits(ingressOver(o.netpols, simPod), namespace, peer.pod, peer.ns, p.ContainerPort) {
				t.Errorf("%s can reach the simulator's port %d", peer.name, p.ContainerPort)
			}
		}
	}
}

// containerPort returns the number of the port of c that target names (by name or number).
func containerPort(c corev1.Container, target intstr.IntOrString) (int32, bool) {
	for _, p := range c.Ports {
		if (target.Type == intstr.String && p.Name == target.StrVal) || (target.Type == intstr.Int && p.ContainerPort == target.IntVal) {
			return p.ContainerPort, true
		}
	}
	return 0, false
}

// ingressOver returns the policies among nps that restrict traffic into pods labelled pod.
func ingressOver(nps []*networkingv1.NetworkPolicy, pod labels.Set) []*networkingv1.NetworkPolicy {
	var out []*networkingv1.NetworkPolicy
	for _, np := range nps {
		if selects(np, pod) && slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
			out = append(out, np)
		}
	}
	return out
}

// connects reports whether a policy among nps (all in namespace) lets a pod labelled from
// connect to a pod labelled to, in the same namespace, on TCP port: an egress rule of a policy
// over from whose ports include port and whose peers include to (no peers means anywhere).
func connects(nps []*networkingv1.NetworkPolicy, namespace string, from, to labels.Set, port int32) bool {
	here := labels.Set{"kubernetes.io/metadata.name": namespace}
	matches := func(s *metav1.LabelSelector, set labels.Set) bool {
		sel, err := metav1.LabelSelectorAsSelector(s)
		return err == nil && sel.Matches(set)
	}
	for _, np := range nps {
		if !selects(np, from) || !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
			continue
		}
		for _, r := range np.Spec.Egress {
			if !portAllowed(r.Ports, port) {
				continue
			}
			if len(r.To) == 0 {
				return true
			}
			for _, peer := range r.To {
				switch {
				case peer.IPBlock != nil:
					return true
				case peer.NamespaceSelector == nil && peer.PodSelector != nil:
					if matches(peer.PodSelector, to) {
						return true
					}
				case peer.NamespaceSelector != nil:
					if matches(peer.NamespaceSelector, here) && (peer.PodSelector == nil || matches(peer.PodSelector, to)) {
						return true
					}
				}
			}
		}
	}
	return false
}
