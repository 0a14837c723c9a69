package certs

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/tether-edge/tether/pki"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// Replicas loading at once end with one CA, and a broken Secret is an
// error, never replaced.
func TestLoadOrCreateCA(t *testing.T) {
	client := fake.NewClientset()
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		got []*pki.CA
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ca, err := LoadOrCreateCA(t.Context(), client, "ns", "ca", quiet)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			got = append(got, ca)
			mu.Unlock()
		}()
	}
	wg.Wait()
	for _, ca := range got[1:] {
		if !ca.Cert.Equal(got[0].Cert) {
			t.Fatal("two CAs")
		}
	}
	client.CoreV1().Secrets("ns").Create(t.Context(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "broken", Namespace: "ns"},
		Data: map[string][]byte{"tls.crt": []byte("x")}}, metav1.CreateOptions{})
	if _, err := LoadOrCreateCA(t.Context(), client, "ns", "broken", quiet); err == nil {
		t.Fatal("a broken CA Secret was taken")
	}
	s, _ := client.CoreV1().Secrets("ns").Get(t.Context(), "broken", metav1.GetOptions{})
	if string(s.Data["tls.crt"]) != "x" {
		t.Fatal("the broken Secret was replaced")
	}
}

// The serving certificate is renewed after two thirds of its life and
// served without a restart; it chains to the CA.
func TestServingRenewed(t *testing.T) {
	ca, err := pki.NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewIssuedServing(ca, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, 3*time.Second, quiet)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := s.GetCertificate(&tls.ClientHelloInfo{})
	if len(first.Certificate) != 2 {
		t.Fatalf("chain of %d certificates, want the leaf and the CA", len(first.Certificate))
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- s.Start(ctx) }()
	time.Sleep(2500 * time.Millisecond)
	now, _ := s.GetCertificate(&tls.ClientHelloInfo{})
	cancel()
	<-done
	if now.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 {
		t.Fatal("not renewed after 2/3 of its life")
	}
	if now.Leaf.DNSNames[0] != "localhost" {
		t.Fatalf("names %v", now.Leaf.DNSNames)
	}
}
