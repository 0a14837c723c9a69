package simulator

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/cloudcore/certs"
	"github.com/tether-edge/tether/cloudcore/enroll"
	"github.com/tether-edge/tether/pki"
)

// startEnroll loads the hub's CA from its Secret and builds the enrollment
// service the hollow nodes get their identity from. A Sim that runs
// cloudcore creates the CA (and its namespace) if it is missing, before
// cloudcore starts and loads it; a joined Sim needs the one its hub's
// cloudcore made.
func (s *Sim) startEnroll(ctx context.Context) error {
	var ca *pki.CA
	if h := s.cfg.Hub; h != nil {
		sec, err := s.client.CoreV1().Secrets(h.Namespace).Get(ctx, h.CASecret, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("simulator: the hub's CA, Secret %s/%s: %w", h.Namespace, h.CASecret, err)
		}
		if ca, err = pki.ParseCA(sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey]); err != nil {
			return fmt.Errorf("simulator: the hub's CA, Secret %s/%s: %w", h.Namespace, h.CASecret, err)
		}
	} else {
		ns := s.cfg.Cloud.Namespace
		_, err := s.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
			metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("simulator: namespace %s of cloudcore's CA: %w", ns, err)
		}
		if ca, err = certs.LoadOrCreateCA(ctx, s.client, ns, s.cfg.Cloud.CASecret, s.log); err != nil {
			return fmt.Errorf("simulator: %w", err)
		}
	}
	bundle := ca.CertPEM()
	if f := s.cfg.Cloud.TLSCAFile; f != "" && s.cfg.Hub == nil { // the hub serves an operator's certificate
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("simulator: cloud.tlsCAFile: %w", err)
		}
		bundle = append(bundle, b...)
	}
	s.roots = x509.NewCertPool()
	if !s.roots.AppendCertsFromPEM(bundle) {
		return fmt.Errorf("simulator: the hub's CA bundle holds no certificate")
	}
	var err error
	s.enroller, err = enroll.New(enroll.Config{
		CA:     ca,
		Bundle: bundle,
		// SimLabel: the Sim's informer and Close find its Nodes by it.
		Nodes: &enroll.KubeNodes{Client: s.client, Labels: map[string]string{SimLabel: s.cfg.Name}},
		Log:   s.log.With(slog.String("side", "enroll")),
	})
	if err != nil {
		return fmt.Errorf("simulator: %w", err)
	}
	return nil
}

// Enrollment is what one Enroll did.
type Enrollment struct {
	// Nodes is how many nodes were enrolled, Took how long it took them.
	Nodes int
	Took  time.Duration
}

func (e Enrollment) String() string {
	rate := 0.0
	if e.Took > 0 {
		rate = float64(e.Nodes) / e.Took.Seconds()
	}
	return fmt.Sprintf("%d nodes enrolled in %s (%.0f a second)", e.Nodes, roundDur(e.Took), rate)
}

// Enroll gives the nodes in sel (nil: every node) that have no identity yet
// theirs, as `edgecore join` gives a real node its own: a key each, its
// Node registered (with SimLabel and the identity the certificate carries)
// and a client certificate from the hub's CA, enrollWorkers nodes at a time.
// A node keeps its certificate across restarts. Connect enrolls the nodes
// it starts before it starts them, outside the connect time that
// WaitConnected measures: the registration that happened on a node's first
// status report happens here now.
func (s *Sim) Enroll(ctx context.Context, sel []int) (Enrollment, error) {
	if sel == nil {
		sel = allNodes(s.fleet.size())
	}
	if s.memBase == nil { // before the nodes' keys and certificates
		m := sampleMemory()
		s.memBase = &m
	}
	t0 := time.Now()
	n, err := s.fleet.enroll(ctx, sel)
	e := Enrollment{Nodes: n, Took: time.Since(t0)}
	if n > 0 {
		s.enrollments = append(s.enrollments, e)
		s.note("enroll: %s", e)
	}
	if err != nil {
		return e, fmt.Errorf("enroll: %d nodes enrolled: %w", n, err)
	}
	return e, nil
}

// Enrollments are the Enrolls so far that enrolled nodes.
func (s *Sim) Enrollments() []Enrollment { return s.enrollments }
