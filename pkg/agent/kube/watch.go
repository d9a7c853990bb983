package kube

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// NewClient returns a clientset from kubeconfig, or from the pod's service
// account when kubeconfig is empty (the DaemonSet).
func NewClient(kubeconfig string) (kubernetes.Interface, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig == "" {
		cfg, err = rest.InClusterConfig()
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	cfg.UserAgent = "hms-node-agent"
	return kubernetes.NewForConfig(cfg)
}

// watcher holds the informers: pods of one node (a field selector, so the
// API server sends only those) and every namespace (for their labels).
type watcher struct {
	node   string
	pods   cache.SharedIndexInformer
	nss    cache.SharedIndexInformer
	podsL  listersv1.PodLister
	nssL   listersv1.NamespaceLister
	byUID  cache.Indexer
	synced []cache.InformerSynced
}

const byUIDIndex = "uid"

func newWatcher(client kubernetes.Interface, node string, resync time.Duration, changed func()) (*watcher, error) {
	onNode := informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", node).String()
	})
	pf := informers.NewSharedInformerFactoryWithOptions(client, resync, onNode)
	nf := informers.NewSharedInformerFactory(client, resync)
	w := &watcher{node: node, pods: pf.Core().V1().Pods().Informer(), nss: nf.Core().V1().Namespaces().Informer(),
		podsL: pf.Core().V1().Pods().Lister(), nssL: nf.Core().V1().Namespaces().Lister()}
	for _, inf := range []cache.SharedIndexInformer{w.pods, w.nss} {
		if err := inf.SetTransform(stripManagedFields); err != nil {
			return nil, err
		}
		h := cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { changed() },
			UpdateFunc: func(any, any) { changed() },
			DeleteFunc: func(any) { changed() },
		}
		if _, err := inf.AddEventHandler(h); err != nil {
			return nil, err
		}
		w.synced = append(w.synced, inf.HasSynced)
	}
	err := w.pods.AddIndexers(cache.Indexers{byUIDIndex: func(obj any) ([]string, error) {
		if p, ok := obj.(*corev1.Pod); ok {
			return []string{string(p.UID)}, nil
		}
		return nil, nil
	}})
	if err != nil {
		return nil, err
	}
	w.byUID = w.pods.GetIndexer()
	return w, nil
}

// run starts the informers and returns once their caches are filled (or
// ctx ends); they stop with ctx.
func (w *watcher) run(ctx context.Context) bool {
	go w.pods.Run(ctx.Done())
	go w.nss.Run(ctx.Done())
	return cache.WaitForCacheSync(ctx.Done(), w.synced...)
}

func (w *watcher) hasSynced() bool {
	for _, s := range w.synced {
		if !s() {
			return false
		}
	}
	return true
}

// podsOnNode lists the cached pods of this node. The field selector
// already restricts them; the check here keeps a misbehaving (or fake)
// API from making us enroll another node's pod.
func (w *watcher) podsOnNode() []*corev1.Pod {
	all, _ := w.podsL.List(labels.Everything())
	out := all[:0]
	for _, p := range all {
		if p.Spec.NodeName == w.node {
			out = append(out, p)
		}
	}
	return out
}

// pod finds a sandbox's pod: by UID, else by namespace and name (a static
// pod's mirror has a UID of its own).
func (w *watcher) pod(sb Sandbox) *corev1.Pod {
	if sb.UID != "" {
		if objs, _ := w.byUID.ByIndex(byUIDIndex, sb.UID); len(objs) > 0 {
			if p := objs[0].(*corev1.Pod); p.Spec.NodeName == w.node {
				return p
			}
		}
	}
	if sb.Name != "" && sb.Namespace != "" {
		if p, err := w.podsL.Pods(sb.Namespace).Get(sb.Name); err == nil && p.Spec.NodeName == w.node {
			return p
		}
	}
	return nil
}

func (w *watcher) namespace(name string) *corev1.Namespace {
	ns, err := w.nssL.Get(name)
	if err != nil {
		return nil
	}
	return ns
}

// stripManagedFields drops what the informers never read: managed fields
// are most of an object's size.
func stripManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}
