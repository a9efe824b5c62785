package k8s

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// objects is one rendered kustomization, decoded into API types.
type objects struct {
	deployments   []*appsv1.Deployment
	services      []*corev1.Service
	configMaps    map[string]*corev1.ConfigMap
	secrets       []*corev1.Secret
	namespaces    []*corev1.Namespace
	pdbs          []*policyv1.PodDisruptionBudget
	hpas          []*autoscalingv2.HorizontalPodAutoscaler
	netpols       []*networkingv1.NetworkPolicy
	ingresses     []*networkingv1.Ingress
	scaledObjects []*scaledObject
	clusters      []*cnpgCluster
	// inNamespace is the set of namespaces the namespaced objects are in ("" for none).
	inNamespace map[string]bool
}

var (
	scaledObjectKind = schema.GroupVersionKind{Group: "keda.sh", Version: "v1alpha1", Kind: "ScaledObject"}
	cnpgClusterKind  = schema.GroupVersionKind{Group: "postgresql.cnpg.io", Version: "v1", Kind: "Cluster"}
)

// deserializer decodes the built-in kinds the manifests use, strictly: an unknown field, a
// field in the wrong case or a duplicated field is an error, as `kubectl apply
// --validate=strict` would report it. A kind not registered here is an error too, so a new kind
// in the manifests comes with its checks.
var deserializer = func() runtime.Decoder {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		appsv1.AddToScheme, corev1.AddToScheme, policyv1.AddToScheme,
		autoscalingv2.AddToScheme, networkingv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
}()

// render builds the kustomization in dir as `kubectl kustomize dir` does and decodes every
// object. It returns every decoding error, not only the first.
func render(dir string) (*objects, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	o := &objects{configMaps: map[string]*corev1.ConfigMap{}, inNamespace: map[string]bool{}}
	var errs []error
	for _, r := range m.Resources() {
		data, err := r.MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", r.GetKind(), r.GetName(), err)
		}
		if err := o.add(data); err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", r.GetKind(), r.GetName(), err))
		}
	}
	return o, errors.Join(errs...)
}

// mustRender renders dir and fails the test on any error.
func mustRender(t *testing.T, dir string) *objects {
	t.Helper()
	o, err := render(dir)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func (o *objects) add(data []byte) error {
	var tm metav1.TypeMeta
	if err := json.Unmarshal(data, &tm); err != nil {
		return err
	}
	switch tm.GroupVersionKind() {
	case scaledObjectKind:
		so := new(scaledObject)
		if err := strict(data, so); err != nil {
			return err
		}
		o.scaledObjects = append(o.scaledObjects, so)
		o.inNamespace[so.Metadata.Namespace] = true
		return nil
	case cnpgClusterKind:
		c := new(cnpgCluster)
		if err := strict(data, c); err != nil {
			return err
		}
		o.clusters = append(o.clusters, c)
		o.inNamespace[c.Metadata.Namespace] = true
		return nil
	}
	obj, _, err := deserializer.Decode(data, nil, nil)
	if err != nil {
		return err
	}
	switch obj := obj.(type) {
	case *corev1.Namespace:
		o.namespaces = append(o.namespaces, obj)
		return nil
	case *appsv1.Deployment:
		o.deployments = append(o.deployments, obj)
	case *corev1.Service:
		o.services = append(o.services, obj)
	case *corev1.ConfigMap:
		o.configMaps[obj.Name] = obj
	case *corev1.Secret:
		o.secrets = append(o.secrets, obj)
	case *policyv1.PodDisruptionBudget:
		o.pdbs = append(o.pdbs, obj)
	case *autoscalingv2.HorizontalPodAutoscaler:
		o.hpas = append(o.hpas, obj)
	case *networkingv1.NetworkPolicy:
		o.netpols = append(o.netpols, obj)
	case *networkingv1.Ingress:
		o.ingresses = append(o.ingresses, obj)
	default:
		return fmt.Errorf("the test has no checks for %T: add them", obj)
	}
	o.inNamespace[obj.(metav1.Object).GetNamespace()] = true
	return nil
}

// strict decodes JSON into v case-sensitively, with unknown and duplicated fields as errors:
// the rules the API server applies with strict field validation.
func strict(data []byte, v any) error {
	strictErrs, err := sigsjson.UnmarshalStrict(data, v,
		sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}
