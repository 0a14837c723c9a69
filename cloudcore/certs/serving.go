package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/tether-edge/tether/pki"
)

// Serving is the hub's serving certificate, for tls.Config.GetCertificate.
// Either issued by the CA in memory (NewIssuedServing) and renewed after two
// thirds of its life, or an operator's files (NewFileServing) reloaded when
// they change.
type Serving struct {
	log *slog.Logger
	// issue makes a new certificate; nil for files.
	issue func() (*tls.Certificate, error)
	// certFile and keyFile are the operator's files; empty when issued.
	certFile, keyFile string

	mu sync.Mutex
	// cur is the certificate served; guarded by mu.
	cur *tls.Certificate
	// modTime is of certFile and keyFile when cur was read; guarded by mu.
	modTime [2]time.Time
	// issuedAt is when cur was issued (the certificate's NotBefore is
	// back-dated for clock skew); guarded by mu.
	issuedAt time.Time
}

// NewIssuedServing issues a serving certificate for dnsNames and ips from ca,
// valid for validity, and renews it from Start.
func NewIssuedServing(ca *pki.CA, dnsNames []string, ips []net.IP, validity time.Duration, log *slog.Logger) (*Serving, error) {
	if validity <= 0 {
		return nil, fmt.Errorf("serving certificate validity %s: must be positive", validity)
	}
	s := &Serving{log: log, issue: func() (*tls.Certificate, error) {
		certPEM, keyPEM, err := ca.IssueServer("tether-cloudcore", dnsNames, ips, validity)
		if err != nil {
			return nil, err
		}
		// The chain holds the CA too, so that edgecore join can pin it by
		// hash before it trusts anything.
		pair, err := tls.X509KeyPair(append(certPEM, ca.CertPEM()...), keyPEM)
		if err != nil {
			return nil, fmt.Errorf("serving certificate: %w", err)
		}
		return &pair, nil
	}}
	c, err := s.issue()
	if err != nil {
		return nil, err
	}
	s.cur, s.issuedAt = c, time.Now()
	return s, nil
}

// NewFileServing serves the operator's certificate and key files, reloaded
// from Start when either changes.
func NewFileServing(certFile, keyFile string, log *slog.Logger) (*Serving, error) {
	s := &Serving{log: log, certFile: certFile, keyFile: keyFile}
	if _, err := s.reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// GetCertificate is for tls.Config.GetCertificate.
func (s *Serving) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur, nil
}

// Leaf returns the certificate served now.
func (s *Serving) Leaf() *x509.Certificate {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur.Leaf
}

// Start renews (or reloads) the certificate until ctx ends.
func (s *Serving) Start(ctx context.Context) error {
	for {
		wait := time.Minute
		if s.issue != nil {
			s.mu.Lock()
			from, to := s.issuedAt, s.cur.Leaf.NotAfter
			s.mu.Unlock()
			wait = max(time.Until(from.Add(to.Sub(from)*2/3)), time.Second)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		if s.issue == nil {
			if changed, err := s.reload(); err != nil {
				s.log.Error("reload serving certificate", slog.String("file", s.certFile), slog.Any("err", err))
			} else if changed {
				s.log.Info("serving certificate reloaded", slog.String("file", s.certFile),
					slog.Time("notAfter", s.Leaf().NotAfter))
			}
			continue
		}
		c, err := s.issue()
		if err != nil {
			s.log.Error("renew serving certificate", slog.Any("err", err))
			continue
		}
		s.mu.Lock()
		s.cur, s.issuedAt = c, time.Now()
		s.mu.Unlock()
		s.log.Info("serving certificate renewed", slog.Time("notAfter", c.Leaf.NotAfter))
	}
}

// reload reads the files if they changed since the last read.
func (s *Serving) reload() (changed bool, err error) {
	var mt [2]time.Time
	for i, f := range []string{s.certFile, s.keyFile} {
		st, err := os.Stat(f)
		if err != nil {
			return false, fmt.Errorf("serving certificate: %w", err)
		}
		mt[i] = st.ModTime()
	}
	s.mu.Lock()
	same := s.cur != nil && mt == s.modTime
	s.mu.Unlock()
	if same {
		return false, nil
	}
	pair, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
	if err != nil {
		return false, fmt.Errorf("serving certificate: %w", err)
	}
	if pair.Leaf == nil {
		return false, errors.New("serving certificate: no leaf")
	}
	s.mu.Lock()
	s.cur, s.modTime = &pair, mt
	s.mu.Unlock()
	return true, nil
}
