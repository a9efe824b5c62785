// Package k8s holds Herald's Kubernetes manifests (base, overlays/dev, overlays/prod, stack) and
// the tests that check them. It has no code: the tests render every overlay with kustomize,
// decode every object strictly into its Kubernetes API type (so a misspelt field fails), and
// check what Herald needs of them, such as probes, limits, non-root pods, secrets by reference,
// one KEDA ScaledObject per workers Deployment, and HERALD_* variables that the binaries know.
package k8s
