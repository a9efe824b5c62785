package k8s

import (
	"os"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestStack checks what Herald's guarantees rest on: PostgreSQL with a synchronous replica, and
// NATS as a cluster of three with JetStream on disk and an fsync on every write, in step with
// the prod overlay's settings.
func TestStack(t *testing.T) {
	o := mustRender(t, "stack")
	if len(o.clusters) != 1 || len(o.deployments)+len(o.services)+len(o.secrets) != 0 {
		t.Fatalf("the stack should render one PostgreSQL Cluster and nothing else")
	}
	c := o.clusters[0].Spec
	if o.clusters[0].Metadata.Name != "herald-pg" {
		t.Errorf("Cluster %s: deploy/README.md and overlays/dev expect herald-pg", o.clusters[0].Metadata.Name)
	}
	if c.Instances < 2 {
		t.Errorf("Cluster: %d instances, want a primary and at least one replica", c.Instances)
	}
	switch s := c.PostgreSQL; {
	case s == nil || s.Synchronous == nil:
		t.Errorf("Cluster: no synchronous replication: a failover could lose acknowledged commits")
	case s.Synchronous.Number < 1 || s.Synchronous.Number >= c.Instances:
		t.Errorf("Cluster: synchronous number %d, want 1 to instances-1", s.Synchronous.Number)
	case s.Synchronous.DataDurability != "required":
		t.Errorf("Cluster: dataDurability %q: with one replica down, commits would be on one disk", s.Synchronous.DataDurability)
	}
	if a := c.Affinity; a == nil || a.EnablePodAntiAffinity == nil || !*a.EnablePodAntiAffinity || a.PodAntiAffinityType != "required" {
		t.Errorf("Cluster: the instances must be on different nodes (required pod anti-affinity)")
	}
	if c.Storage.Size == "" || c.WALStorage == nil || c.WALStorage.Size == "" {
		t.Errorf("Cluster: storage and walStorage need sizes")
	}

	data, err := os.ReadFile("stack/nats-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatal(err)
	}
	var v natsValues
	if err := strict(j, &v); err != nil {
		t.Fatalf("stack/nats-values.yaml: %v", err)
	}
	js := v.Config.JetStream
	switch {
	case !v.Config.Cluster.Enabled || v.Config.Cluster.Replicas != 3:
		t.Errorf("nats-values: want a cluster of 3")
	case !js.Enabled || !js.FileStore.Enabled || !js.FileStore.PVC.Enabled || js.FileStore.PVC.Size == "":
		t.Errorf("nats-values: want JetStream with file storage on a persistent volume")
	case js.MemoryStore.Enabled:
		t.Errorf("nats-values: the memory store should be off")
	case js.Merge.SyncInterval != "always":
		t.Errorf("nats-values: sync_interval %q, want always (fsync on every write)", js.Merge.SyncInterval)
	case !v.Config.Monitor.Enabled || v.Config.Monitor.Port != 8222:
		t.Errorf("nats-values: KEDA reads the monitoring port, 8222")
	}

	// The prod overlay runs on this stack.
	prod := mustRender(t, "overlays/prod")
	for _, d := range prod.deployments {
		vars := env(t, prod, d, d.Spec.Template.Spec.Containers[0])
		if got, want := vars["HERALD_STREAM_REPLICAS"], "3"; got != want || v.Config.Cluster.Replicas < 3 {
			t.Errorf("Deployment %s: HERALD_STREAM_REPLICAS=%s on a cluster of %d", d.Name, got, v.Config.Cluster.Replicas)
		}
		if n := len(strings.Split(vars["HERALD_NATS_URL"], ",")); n != v.Config.Cluster.Replicas {
			t.Errorf("Deployment %s: HERALD_NATS_URL names %d servers, the cluster has %d", d.Name, n, v.Config.Cluster.Replicas)
		}
	}

	// The dev overlay brings its own single PostgreSQL under the same name.
	dev := mustRender(t, "overlays/dev")
	if len(dev.clusters) != 1 || dev.clusters[0].Metadata.Name != "herald-pg" {
		t.Errorf("overlays/dev should bring one Cluster herald-pg")
	}
}

// TestStrictDecoding shows that the decoding above fails on the mistakes it is there to catch.
func TestStrictDecoding(t *testing.T) {
	for _, tc := range []struct {
		dir, field string
	}{
		{"testdata/misspelt-field", "readinesProbe"},
		{"testdata/wrong-case", "ContainerPort"},
		{"testdata/misspelt-scaledobject", "lagTreshold"},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			_, err := render(tc.dir)
			if err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Errorf("render(%s) = %v, want an error naming %s", tc.dir, err, tc.field)
			}
		})
	}
}
