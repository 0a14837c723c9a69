package protocol

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// ValidateNodeName checks that name can be a Kubernetes node name.
func ValidateNodeName(name string) error {
	if name == "" {
		return errors.New("node name is empty")
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("node name %q: %s", name, strings.Join(errs, "; "))
	}
	return nil
}

func validateUID(uid string) error {
	if uid == "" {
		return errors.New("uid is empty")
	}
	if len(uid) > 128 {
		return fmt.Errorf("uid of %d bytes is longer than 128", len(uid))
	}
	return nil
}

func validateKind(k Kind) error {
	if !k.Valid() {
		return fmt.Errorf("unknown kind %d", uint8(k))
	}
	return nil
}

func validateMeta(namespace, name string, namespaced bool) error {
	if name == "" {
		return errors.New("name is empty")
	}
	if len(name) > 253 {
		return fmt.Errorf("name of %d bytes is longer than 253", len(name))
	}
	if namespaced && namespace == "" {
		return errors.New("namespace is empty")
	}
	if len(namespace) > 63 {
		return fmt.Errorf("namespace of %d bytes is longer than 63", len(namespace))
	}
	return nil
}

func (r ObjectRef) validate() error {
	if err := validateKind(r.Kind); err != nil {
		return err
	}
	return validateUID(r.UID)
}

func (o *Object) validate() error {
	if err := validateKind(o.Kind); err != nil {
		return err
	}
	if err := validateUID(o.UID); err != nil {
		return err
	}
	if err := validateMeta(o.Namespace, o.Name, true); err != nil {
		return err
	}
	if o.ResourceVersion == "" {
		return errors.New("resourceVersion is empty")
	}
	if len(o.Data) == 0 {
		return errors.New("object data is empty")
	}
	return nil
}

func (h *Hello) validate() error {
	if h.ProtocolVersion == 0 {
		return errors.New("protocol version is 0")
	}
	if h.MinVersion > h.ProtocolVersion {
		return fmt.Errorf("min version %d above version %d", h.MinVersion, h.ProtocolVersion)
	}
	if err := ValidateNodeName(h.NodeName); err != nil {
		return err
	}
	for i, r := range h.Inventory {
		if err := r.validate(); err != nil {
			return fmt.Errorf("inventory[%d]: %w", i, err)
		}
	}
	for i, r := range h.NewInventory {
		if err := r.validate(); err != nil {
			return fmt.Errorf("newInventory[%d]: %w", i, err)
		}
	}
	return nil
}

func (w *Welcome) validate() error {
	if w.ProtocolVersion == 0 {
		return errors.New("protocol version is 0")
	}
	if w.HeartbeatInterval <= 0 || w.SessionTimeout <= w.HeartbeatInterval {
		return fmt.Errorf("heartbeat interval %dms and session timeout %dms: want 0 < interval < timeout",
			w.HeartbeatInterval, w.SessionTimeout)
	}
	if w.ReconnectMax < 0 || w.ReconnectMax > DurationOf(time.Hour) {
		return fmt.Errorf("reconnect max %dms: want 0 to an hour", w.ReconnectMax)
	}
	return nil
}

func (u *Upsert) validate() error { return u.Object.validate() }

func (d *Delete) validate() error {
	if err := validateKind(d.Kind); err != nil {
		return err
	}
	return validateUID(d.UID)
}

func (a *Ack) validate() error {
	if len(a.Seqs) == 0 && len(a.Rejected) == 0 {
		return errors.New("acknowledges nothing")
	}
	for _, s := range a.Seqs {
		if s == 0 {
			return errors.New("acknowledges seq 0")
		}
	}
	for _, r := range a.Rejected {
		if r.Seq == 0 {
			return errors.New("rejects seq 0")
		}
	}
	return nil
}

func (*Heartbeat) validate() error  { return nil }
func (*ResyncDone) validate() error { return nil }

func (n *NodeStatus) validate() error {
	if len(n.Status) == 0 {
		return errors.New("status is empty")
	}
	return nil
}

func (p *PodStatus) validate() error {
	if err := validateUID(p.UID); err != nil {
		return err
	}
	if err := validateMeta(p.Namespace, p.Name, true); err != nil {
		return err
	}
	if len(p.Status) == 0 {
		return errors.New("status is empty")
	}
	return nil
}

func (p *PodTerminated) validate() error {
	if err := validateUID(p.UID); err != nil {
		return err
	}
	return validateMeta(p.Namespace, p.Name, true)
}

func (e *Event) validate() error {
	if e.InvolvedKind == "" {
		return errors.New("involved kind is empty")
	}
	if err := validateMeta(e.Namespace, e.Name, false); err != nil {
		return err
	}
	if e.Type != "Normal" && e.Type != "Warning" {
		return fmt.Errorf("event type %q, want Normal or Warning", e.Type)
	}
	if e.Reason == "" {
		return errors.New("reason is empty")
	}
	if len(e.FieldPath) > MaxEventFieldPath {
		return fmt.Errorf("field path of %d bytes, at most %d", len(e.FieldPath), MaxEventFieldPath)
	}
	if e.Count < 0 {
		return fmt.Errorf("count %d is negative", e.Count)
	}
	return nil
}

// MaxEventFieldPath bounds Event.FieldPath ("spec.containers{name}" with a
// container name of at most 63 bytes).
const MaxEventFieldPath = 256

func (e *Error) validate() error {
	if e.Code == 0 {
		return errors.New("error code is 0")
	}
	return nil
}

func (m *MirrorPod) validate() error {
	if err := validateMeta(m.Namespace, m.Name, true); err != nil {
		return err
	}
	if m.Delete != (len(m.Pod) == 0) {
		return errors.New("a mirror pod has either a pod or Delete")
	}
	return nil
}

// MaxDeviceTwins bounds the properties of one DeviceStatus.
const MaxDeviceTwins = 1024

func (d *DeviceStatus) validate() error {
	if err := validateUID(d.UID); err != nil {
		return err
	}
	if err := validateMeta(d.Namespace, d.Name, true); err != nil {
		return err
	}
	if len(d.Twins) > MaxDeviceTwins {
		return fmt.Errorf("%d twins, more than %d", len(d.Twins), MaxDeviceTwins)
	}
	for i, t := range d.Twins {
		if t.Name == "" {
			return fmt.Errorf("twins[%d]: name is empty", i)
		}
		if i > 0 && d.Twins[i-1].Name >= t.Name {
			return fmt.Errorf("twins[%d]: %q not after %q (twins are sorted by unique name)", i, t.Name, d.Twins[i-1].Name)
		}
	}
	return nil
}

// MaxCertSize bounds the PEM of a certificate request or a certificate.
const MaxCertSize = 8 << 10

func (c *CertRequest) validate() error {
	if len(c.CSR) == 0 || len(c.CSR) > MaxCertSize {
		return fmt.Errorf("certificate request of %d bytes: want 1 to %d", len(c.CSR), MaxCertSize)
	}
	return nil
}

func (c *CertIssued) validate() error {
	if len(c.Certificate) == 0 || len(c.Certificate) > MaxCertSize {
		return fmt.Errorf("certificate of %d bytes: want 1 to %d", len(c.Certificate), MaxCertSize)
	}
	return nil
}

// maxAccessField bounds each string of an AccessReview (names are at most
// 253 characters in Kubernetes; verbs and resources far fewer).
const maxAccessField = 253

func (r *AccessReview) validate() error {
	for name, v := range map[string]string{"namespace": r.Namespace, "pod": r.Pod, "podUID": r.PodUID,
		"serviceAccount": r.ServiceAccount} {
		if v == "" || len(v) > maxAccessField {
			return fmt.Errorf("%s of %d characters: want 1 to %d", name, len(v), maxAccessField)
		}
	}
	if len(r.Checks) == 0 || len(r.Checks) > MaxAccessChecks {
		return fmt.Errorf("%d checks: want 1 to %d", len(r.Checks), MaxAccessChecks)
	}
	for i, c := range r.Checks {
		if c.Verb == "" || c.Resource == "" {
			return fmt.Errorf("checks[%d]: no verb or resource", i)
		}
		for _, v := range []string{c.Verb, c.Group, c.Resource, c.Namespace, c.Name} {
			if len(v) > maxAccessField {
				return fmt.Errorf("checks[%d]: a field over %d characters", i, maxAccessField)
			}
		}
	}
	return nil
}

func (r *AccessReviewResult) validate() error {
	if len(r.Allowed) > MaxAccessChecks {
		return fmt.Errorf("%d answers: want at most %d", len(r.Allowed), MaxAccessChecks)
	}
	if len(r.Error) > 1024 {
		return fmt.Errorf("error of %d bytes: want at most 1024", len(r.Error))
	}
	if (len(r.Allowed) == 0) == (r.Error == "") {
		return errors.New("want either answers or an error")
	}
	return nil
}
