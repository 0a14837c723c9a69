// Command incluster is the client-go program of the in-cluster API test
// image: inside a pod it builds rest.InClusterConfig() (the
// KUBERNETES_SERVICE_HOST/PORT variables, the service-account token and
// ca.crt of the kube-api-access volume), and every half second prints one
// line per call: a list of the pods of its namespace, a list of its
// namespace's secrets, a create of a ConfigMap, a create of a Secret (which
// its service account may not do); a watch of the pods prints its events.
// Every 10th round it times 200 lists of the pods (40 a second, under the
// listener's rate per pod) and 50 dry-run creates of a ConfigMap (relayed
// to the cloud) and prints their p50 and p99, and opens a new watch for a
// second. The lines are parsed by e2e's TestInClusterAPI.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

const nsFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

func main() {
	cfg, err := rest.InClusterConfig()
	if err != nil {
		fmt.Println("config error:", err)
		os.Exit(1)
	}
	fmt.Println("config host", cfg.Host)
	b, err := os.ReadFile(nsFile)
	if err != nil {
		fmt.Println("namespace error:", err)
		os.Exit(1)
	}
	ns := strings.TrimSpace(string(b))
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fmt.Println("client error:", err)
		os.Exit(1)
	}
	// The timed lists go without client-go's client-side rate limit (5
	// requests per second by default), which would be all they measure.
	bcfg := rest.CopyConfig(cfg)
	bcfg.QPS = -1
	bcs, err := kubernetes.NewForConfig(bcfg)
	if err != nil {
		fmt.Println("client error:", err)
		os.Exit(1)
	}
	ctx := context.Background()
	go watch(ctx, cs, ns)
	for round := 1; ; round++ {
		fmt.Println("round", round)
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			fmt.Println("pods", describe(err))
		} else {
			var names []string
			for _, p := range pods.Items {
				names = append(names, p.Name)
			}
			fmt.Printf("pods ok %s\n", strings.Join(names, ","))
		}
		_, err = cs.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
		fmt.Println("secrets", describe(err))
		_, err = cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
			GenerateName: "incluster-"}}, metav1.CreateOptions{})
		fmt.Println("create", describe(err))
		_, err = cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
			GenerateName: "incluster-"}}, metav1.CreateOptions{})
		fmt.Println("screate", describe(err))
		if round%10 == 0 {
			bench(ctx, bcs, ns)
			benchWrites(ctx, bcs, ns)
			rewatch(ctx, cs, ns)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// describe is "ok" or "error <code> <message>".
func describe(err error) string {
	if err == nil {
		return "ok"
	}
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		return fmt.Sprintf("error %d %s", st.Status().Code, st.Status().Message)
	}
	return "error 0 " + err.Error()
}

func bench(ctx context.Context, cs kubernetes.Interface, ns string) {
	var d []time.Duration
	for range 200 {
		t := time.Now()
		if _, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); err != nil {
			fmt.Println("bench", describe(err))
			return
		}
		d = append(d, time.Since(t))
		// 40 a second: under the in-cluster listener's rate per pod (50,
		// burst 100), whose 429 would be timed instead.
		time.Sleep(25 * time.Millisecond)
	}
	slices.Sort(d)
	fmt.Printf("bench n=%d p50=%s p99=%s\n", len(d), d[len(d)/2], d[len(d)*99/100])
}

// benchWrites times 50 dry-run creates of a ConfigMap (relayed to the
// cloud, nothing stored), 20 a second.
func benchWrites(ctx context.Context, cs kubernetes.Interface, ns string) {
	var d []time.Duration
	for range 50 {
		t := time.Now()
		_, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{GenerateName: "bench-"}},
			metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			fmt.Println("wbench", describe(err))
			return
		}
		d = append(d, time.Since(t))
		time.Sleep(50 * time.Millisecond)
	}
	slices.Sort(d)
	fmt.Printf("wbench n=%d p50=%s p99=%s\n", len(d), d[len(d)/2], d[len(d)*99/100])
}

// rewatch opens a new watch of the pods for a second and prints its
// events ("rewatch ADDED <name>": the current pods).
func rewatch(ctx context.Context, cs kubernetes.Interface, ns string) {
	timeout := int64(1)
	w, err := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{TimeoutSeconds: &timeout})
	if err != nil {
		fmt.Println("rewatch", describe(err))
		return
	}
	t := time.AfterFunc(2*time.Second, w.Stop)
	defer t.Stop()
	for ev := range w.ResultChan() {
		if p, ok := ev.Object.(*corev1.Pod); ok {
			fmt.Println("rewatch", ev.Type, p.Name)
		}
	}
}

func watch(ctx context.Context, cs kubernetes.Interface, ns string) {
	for {
		w, err := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{})
		if err != nil {
			fmt.Println("watch", describe(err))
			time.Sleep(time.Second)
			continue
		}
		for ev := range w.ResultChan() {
			if p, ok := ev.Object.(*corev1.Pod); ok {
				fmt.Println("watch", ev.Type, p.Name)
			}
		}
		fmt.Println("watch ended")
		time.Sleep(time.Second)
	}
}
