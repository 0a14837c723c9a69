// Package accessreview decides, for the in-cluster API at the edge (the
// metaserver's pod listener), whether a pod's service account may read what
// it asks, as the cluster's authorizers would: it asks the cloud
// (protocol.AccessReview, answered by cloudcore with SubjectAccessReviews)
// while the link is up, and keeps the answers for when it is not.
//
// # Why cached SubjectAccessReviews (and not RBAC synced to the edge)
//
// The metaserver serves a small, fixed set of reads: get, list and watch of
// a handful of resources, in a namespace or across all. So for every
// service account of the node's pods the whole set of questions it can ever
// ask without an object name (Checks: 3 verbs x the served resources x its
// pod's namespace and all namespaces, 45 today) is asked in one review when
// the session starts and every Config.Refresh, before any pod needs it. The
// answers are then exactly the cluster's: RBAC with aggregated roles, but
// also any webhook or other authorizer the cluster runs, with no RBAC
// evaluator at the edge that could drift from the API server's. Synced
// RBAC would answer every question offline, also about one named object
// (resourceNames rules), but reimplements RBAC only, needs an RBAC watch
// in cloudcore and a new kind per service account; its answers can be no
// more current than the cached ones. A question about one named object (a
// get of secret "x" when the service account may not get every secret) is
// asked on demand when the link is up (the request waits up to
// Config.AskTimeout), and refused offline if never asked before.
//
// # Offline
//
// An answer is used for Config.MaxAge (default 72h: a long weekend's
// outage) after the cloud last gave it; past that the read is refused (403,
// "authorization expired at the edge"), since a role may have been revoked
// meanwhile. Answers are kept in Config.StateFile, so a restart of edgecore
// during an outage keeps them. Revocation reaches the edge at the next
// refresh while online (at most Config.Refresh late) and never while
// offline: the price of serving at all without the cloud. Answers for
// service accounts no pod of the node uses any more are dropped at the
// next refresh.
//
// The time of an answer is the node's wall clock; a node whose clock jumps
// forward expires its answers early (fails closed), one whose clock jumps
// back keeps them longer.
package accessreview

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/tether-edge/tether/edgecore/satoken"
	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/pki"
	"github.com/tether-edge/tether/protocol"
)

// Resource is a resource the in-cluster API serves.
type Resource struct {
	Group, Resource string
	Namespaced      bool
}

// Verbs are the verbs the in-cluster API serves (reads).
var Verbs = []string{"get", "list", "watch"}

// Config configures a Cache.
type Config struct {
	// StateFile keeps the answers across restarts (required).
	StateFile string
	// Resources are those served: every (verb, resource, namespace) of
	// them is asked for each service account ahead of time (required).
	Resources []Resource
	// Refresh is how often the answers are asked again while online
	// (default 10m).
	Refresh time.Duration
	// MaxAge is how long an answer is used after the cloud gave it
	// (default 72h).
	MaxAge time.Duration
	// AskTimeout is how long a question not yet answered waits for the
	// cloud while the link is up (default 3s); offline it is refused at
	// once.
	AskTimeout time.Duration
	// ResendAfter is when a review unanswered is given up and the next one
	// sent (default 30s).
	ResendAfter time.Duration
	// Logger is where the Cache logs (default slog.Default()).
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

func (c *Config) validate() error {
	if c.StateFile == "" {
		return errors.New("accessreview: no StateFile")
	}
	if len(c.Resources) == 0 {
		return errors.New("accessreview: no Resources")
	}
	if n := len(Checks(c.Resources, "ns")); n > protocol.MaxAccessChecks {
		return fmt.Errorf("accessreview: %d checks per service account, above %d", n, protocol.MaxAccessChecks)
	}
	if c.Refresh == 0 {
		c.Refresh = 10 * time.Minute
	}
	if c.MaxAge == 0 {
		c.MaxAge = 72 * time.Hour
	}
	if c.AskTimeout == 0 {
		c.AskTimeout = 3 * time.Second
	}
	if c.ResendAfter == 0 {
		c.ResendAfter = 30 * time.Second
	}
	if c.Refresh < 0 || c.MaxAge < c.Refresh || c.AskTimeout < 0 || c.ResendAfter <= 0 {
		return fmt.Errorf("accessreview: bad durations (maxAge must be at least refresh) in %+v", *c)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Checks are the questions asked ahead for a service account whose pod
// runs in namespace ns: every verb on every resource, in ns and across
// namespaces (cluster-scoped resources: across only).
func Checks(res []Resource, ns string) []protocol.AccessCheck {
	var out []protocol.AccessCheck
	for _, r := range res {
		for _, v := range Verbs {
			out = append(out, protocol.AccessCheck{Verb: v, Group: r.Group, Resource: r.Resource})
			if r.Namespaced {
				out = append(out, protocol.AccessCheck{Verb: v, Group: r.Group, Resource: r.Resource, Namespace: ns})
			}
		}
	}
	return out
}

// account is a service account.
type account struct{ Namespace, Name string }

// key is one question of one service account.
type key struct {
	account
	protocol.AccessCheck
}

// answer is the cloud's answer and when it came.
type answer struct {
	Allowed bool
	At      time.Time
}

// Cache holds the answers. It implements agent.Reviews and agent.Observer.
type Cache struct {
	cfg   Config
	db    *store.DB
	log   *slog.Logger
	wantc chan struct{}

	mu sync.Mutex
	// Guarded by mu:
	// answers by question.
	answers map[key]answer
	// online: a session with a hub of version 6 or more is up.
	online bool
	// sent is the review in flight (nil: none) and sentAt when it went.
	sent   *protocol.AccessReview
	sentBy account
	sentAt time.Time
	// due are the accounts whose questions are to be asked (ahead).
	due map[account]bool
	// asks are questions asked on demand, with the pod that asks.
	asks []ask
	// waiters are closed when an answer (or a refusal) comes.
	waiters []chan struct{}
	nextID  uint64
}

type ask struct {
	pod   satoken.Pod
	check protocol.AccessCheck
}

// New builds a Cache and loads the saved answers (a file that does not
// parse is logged and ignored: the answers are asked again).
func New(cfg Config, db *store.DB) (*Cache, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Cache{cfg: cfg, db: db, log: cfg.Logger, wantc: make(chan struct{}, 1), answers: map[key]answer{},
		due: map[account]bool{}}
	if err := c.load(); err != nil {
		c.log.Warn("accessreview: saved answers unusable, they are asked again", slog.Any("err", err))
	}
	return c, nil
}

// saved is one answer in the state file.
type saved struct {
	SANamespace string               `json:"saNamespace"`
	SA          string               `json:"sa"`
	Check       protocol.AccessCheck `json:"check"`
	Allowed     bool                 `json:"allowed"`
	At          time.Time            `json:"at"`
}

func (c *Cache) load() error {
	b, err := os.ReadFile(c.cfg.StateFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var all []saved
	if err := json.Unmarshal(b, &all); err != nil {
		return fmt.Errorf("%s: %w", c.cfg.StateFile, err)
	}
	for _, s := range all {
		c.answers[key{account{s.SANamespace, s.SA}, s.Check}] = answer{Allowed: s.Allowed, At: s.At}
	}
	return nil
}

// saveLocked writes the answers to the state file.
func (c *Cache) saveLocked() {
	all := make([]saved, 0, len(c.answers))
	for k, a := range c.answers {
		all = append(all, saved{SANamespace: k.account.Namespace, SA: k.account.Name, Check: k.AccessCheck,
			Allowed: a.Allowed, At: a.At})
	}
	b, err := json.Marshal(all)
	if err == nil {
		err = pki.WriteFileSync(c.cfg.StateFile, b, 0o600)
	}
	if err != nil {
		c.log.Error("accessreview: save answers", slog.Any("err", err))
	}
}

// Decision is the answer to a question.
type Decision struct {
	Allowed bool
	// Reason says why it was refused.
	Reason string
}

// lookupLocked answers check for acc from the fresh answers: allowed if a
// question that covers it (the same across namespaces, or for any name) was
// allowed; known if it or such a question was answered.
func (c *Cache) lookupLocked(acc account, ch protocol.AccessCheck, now time.Time) (allowed, known, expired bool) {
	cands := []protocol.AccessCheck{ch}
	if ch.Name != "" {
		cands = append(cands, protocol.AccessCheck{Verb: ch.Verb, Group: ch.Group, Resource: ch.Resource, Namespace: ch.Namespace})
	}
	if ch.Namespace != "" {
		for _, x := range slices.Clone(cands) {
			x.Namespace = ""
			cands = append(cands, x)
		}
	}
	exact := false
	for i, x := range cands {
		a, ok := c.answers[key{acc, x}]
		if !ok {
			continue
		}
		if now.Sub(a.At) > c.cfg.MaxAge {
			expired = true
			continue
		}
		if a.Allowed {
			return true, true, false
		}
		// A refusal of a broader question says nothing of a narrower
		// one (a name may be allowed where all are not), except
		// across namespaces for the same namespace-wide question.
		if i == 0 || (ch.Name == "" && x.Name == "") {
			exact = true
		}
	}
	return false, exact, expired
}

// Authorize decides whether pod's service account may do check. A question
// not answered yet is asked (and waited for up to Config.AskTimeout) while
// the link is up, and refused while it is not.
func (c *Cache) Authorize(ctx context.Context, pod satoken.Pod, check protocol.AccessCheck) Decision {
	acc := account{pod.Namespace, pod.ServiceAccount}
	deadline := time.NewTimer(c.cfg.AskTimeout)
	defer deadline.Stop()
	asked := false
	for {
		c.mu.Lock()
		allowed, known, expired := c.lookupLocked(acc, check, c.cfg.Now())
		if allowed {
			c.mu.Unlock()
			return Decision{Allowed: true}
		}
		if known {
			c.mu.Unlock()
			return Decision{Reason: "the cluster does not allow it"}
		}
		if !c.online || asked && c.pendingLocked(acc, check) == false {
			c.mu.Unlock()
			if expired {
				return Decision{Reason: fmt.Sprintf("authorization expired at the edge: the cloud's answer is older than %s and the cloud is unreachable", c.cfg.MaxAge)}
			}
			if !c.online {
				return Decision{Reason: "not known at the edge and the cloud is unreachable"}
			}
			return Decision{Reason: "the cloud gave no answer to it"}
		}
		if !asked {
			c.asks = append(c.asks, ask{pod: pod, check: check})
			asked = true
			c.kick()
		}
		w := make(chan struct{})
		c.waiters = append(c.waiters, w)
		c.mu.Unlock()
		select {
		case <-w:
		case <-deadline.C:
			return Decision{Reason: fmt.Sprintf("the cloud did not answer within %s", c.cfg.AskTimeout)}
		case <-ctx.Done():
			return Decision{Reason: "request cancelled"}
		}
	}
}

// pendingLocked reports whether check of acc is still to be asked or in
// flight.
func (c *Cache) pendingLocked(acc account, check protocol.AccessCheck) bool {
	for _, a := range c.asks {
		if a.pod.Namespace == acc.Namespace && a.pod.ServiceAccount == acc.Name && a.check == check {
			return true
		}
	}
	if c.sent != nil && c.sentBy == acc && slices.Contains(c.sent.Checks, check) {
		return true
	}
	return c.due[acc] && check.Name == ""
}

func (c *Cache) kick() {
	select {
	case c.wantc <- struct{}{}:
	default:
	}
}

// Online reports whether a session with a hub that answers reviews is up:
// the metaserver's writes get 503 when it is not.
func (c *Cache) Online() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.online
}

// Wanted implements agent.Reviews.
func (c *Cache) Wanted() <-chan struct{} { return c.wantc }

// Session implements agent.Reviews: a session with a hub of version 6 or
// more started (true) or ended. At its start every service account is due.
func (c *Cache) Session(up bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.online, c.sent = up, nil
	if up {
		c.markAllDueLocked()
		c.kick()
	} else {
		c.wakeLocked()
	}
}

// markAllDueLocked marks every service account of the store's pods due, and
// drops the answers of the others.
func (c *Cache) markAllDueLocked() {
	accs, err := c.accounts()
	if err != nil {
		c.log.Error("accessreview: read pods", slog.Any("err", err))
		return
	}
	for acc := range accs {
		c.due[acc] = true
	}
	dropped := 0
	for k := range c.answers {
		if _, ok := accs[k.account]; !ok {
			delete(c.answers, k)
			dropped++
		}
	}
	if dropped > 0 {
		c.saveLocked()
	}
}

// accounts returns the service accounts of the store's pods, each with one
// of its pods.
func (c *Cache) accounts() (map[account]satoken.Pod, error) {
	out := map[account]satoken.Pod{}
	err := c.db.View(func(tx *store.Tx) error {
		return tx.ForEachObject(protocol.KindPod, func(o *protocol.Object) error {
			p, err := protocol.DecodePod(o.Data)
			if err != nil {
				return nil // logged by whoever runs it
			}
			sa := p.Spec.ServiceAccountName
			if sa == "" {
				sa = "default"
			}
			acc := account{p.Namespace, sa}
			if _, ok := out[acc]; !ok {
				out[acc] = satoken.Pod{Namespace: p.Namespace, Name: p.Name, UID: string(p.UID), ServiceAccount: sa}
			}
			return nil
		})
	})
	return out, err
}

// ObjectsChanged implements agent.Observer: the service accounts of new
// pods are due.
func (c *Cache) ObjectsChanged(kinds map[protocol.Kind]bool, _ []protocol.ObjectRef) {
	if !kinds[protocol.KindPod] {
		return
	}
	accs, err := c.accounts()
	if err != nil {
		c.log.Error("accessreview: read pods", slog.Any("err", err))
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now, n := c.cfg.Now(), 0
	for acc := range accs {
		if c.due[acc] {
			continue
		}
		if _, known, _ := c.lookupLocked(acc, Checks(c.cfg.Resources, acc.Namespace)[0], now); !known {
			c.due[acc] = true
			n++
		}
	}
	if n > 0 && c.online {
		c.kick()
	}
}

// Connected implements agent.Observer.
func (c *Cache) Connected() {}

// Next implements agent.Reviews: the review to send now, or nil. One is in
// flight at a time.
func (c *Cache) Next() *protocol.AccessReview {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Now()
	if !c.online || c.sent != nil && now.Sub(c.sentAt) < c.cfg.ResendAfter {
		return nil
	}
	c.sent = nil
	var r *protocol.AccessReview
	var by account
	if len(c.asks) > 0 {
		a := c.asks[0]
		by = account{a.pod.Namespace, a.pod.ServiceAccount}
		r = &protocol.AccessReview{Namespace: a.pod.Namespace, Pod: a.pod.Name, PodUID: a.pod.UID,
			ServiceAccount: a.pod.ServiceAccount}
		rest := c.asks[:0]
		for _, x := range c.asks {
			if x.pod == a.pod && len(r.Checks) < protocol.MaxAccessChecks {
				if !slices.Contains(r.Checks, x.check) {
					r.Checks = append(r.Checks, x.check)
				}
			} else {
				rest = append(rest, x)
			}
		}
		c.asks = rest
	} else {
		if len(c.due) == 0 {
			return nil
		}
		accs, err := c.accounts()
		if err != nil {
			c.log.Error("accessreview: read pods", slog.Any("err", err))
			return nil
		}
		for acc := range c.due {
			delete(c.due, acc)
			p, ok := accs[acc]
			if !ok {
				continue
			}
			by = acc
			r = &protocol.AccessReview{Namespace: p.Namespace, Pod: p.Name, PodUID: p.UID, ServiceAccount: acc.Name,
				Checks: Checks(c.cfg.Resources, acc.Namespace)}
			break
		}
		if r == nil {
			c.wakeLocked()
			return nil
		}
	}
	c.nextID++
	r.ID = c.nextID
	c.sent, c.sentBy, c.sentAt = r, by, now
	return r
}

// Answered implements agent.Reviews: the hub's answer to the review in
// flight.
func (c *Cache) Answered(res *protocol.AccessReviewResult) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.sent
	if r == nil || res.ID != r.ID {
		return
	}
	c.sent = nil
	defer c.kick()
	defer c.wakeLocked()
	if res.Error != "" || len(res.Allowed) != len(r.Checks) {
		c.log.Warn("accessreview: the cloud refused a review", slog.String("pod", r.Namespace+"/"+r.Pod),
			slog.String("reason", res.Error))
		return
	}
	now := c.cfg.Now()
	for i, ch := range r.Checks {
		c.answers[key{c.sentBy, ch}] = answer{Allowed: res.Allowed[i], At: now}
	}
	c.saveLocked()
}

// wakeLocked wakes every Authorize waiting for an answer.
func (c *Cache) wakeLocked() {
	for _, w := range c.waiters {
		close(w)
	}
	c.waiters = nil
}

// Start marks every service account due each Config.Refresh until ctx
// ends.
func (c *Cache) Start(ctx context.Context) error {
	t := time.NewTicker(c.cfg.Refresh)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			c.mu.Lock()
			if c.online {
				c.markAllDueLocked()
				c.kick()
			}
			c.mu.Unlock()
		case <-ctx.Done():
			return nil
		}
	}
}
