package jointoken

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	k8stesting "k8s.io/client-go/testing"
)

var t0 = time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)

// newClient returns a fake clientset that, like the API server, gives each
// Secret a resourceVersion and refuses an Update of a stale one with a
// Conflict (the fake's tracker does neither). updates counts the Updates
// that reached the tracker, conflicts those refused.
func newClient(t *testing.T, objs ...runtime.Object) (cs *fake.Clientset, updates func() (n, conflicts int)) {
	t.Helper()
	cs = fake.NewSimpleClientset(objs...)
	var rv, n, conflicts int // guarded by the fake's lock, which reactors run under
	gvr := corev1.SchemeGroupVersion.WithResource("secrets")
	cs.PrependReactor("create", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		s := a.(k8stesting.CreateAction).GetObject().(*corev1.Secret).DeepCopy()
		rv++
		s.ResourceVersion = strconv.Itoa(rv)
		if err := cs.Tracker().Create(gvr, s, s.Namespace); err != nil {
			return true, nil, err
		}
		return true, s, nil
	})
	cs.PrependReactor("update", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		s := a.(k8stesting.UpdateAction).GetObject().(*corev1.Secret).DeepCopy()
		cur, err := cs.Tracker().Get(gvr, s.Namespace, s.Name)
		if err != nil {
			return true, nil, err
		}
		if cur.(*corev1.Secret).ResourceVersion != s.ResourceVersion {
			conflicts++
			return true, nil, apierrors.NewConflict(gvr.GroupResource(), s.Name, errors.New("the object has been modified"))
		}
		rv++
		n++
		s.ResourceVersion = strconv.Itoa(rv)
		if err := cs.Tracker().Update(gvr, s, s.Namespace); err != nil {
			return true, nil, err
		}
		return true, s, nil
	})
	return cs, func() (int, int) {
		cs.Lock()
		defer cs.Unlock()
		return n, conflicts
	}
}

func getSecret(t *testing.T, cs *fake.Clientset, id string) *corev1.Secret {
	t.Helper()
	s, err := cs.CoreV1().Secrets(Namespace).Get(t.Context(), SecretName(id), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCreateSecretFormat(t *testing.T) {
	cs, _ := newClient(t)
	tok, err := Create(t.Context(), cs, Options{TTL: time.Hour, Uses: 3, Node: "edge-1", Description: "line 4"}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(tok.ID) != 6 || len(tok.Secret) != 16 || tok.Uses != 3 || tok.Node != "edge-1" ||
		!tok.Expires.Equal(t0.Add(time.Hour)) {
		t.Errorf("token %+v", Token{ID: tok.ID, Expires: tok.Expires, Uses: tok.Uses, Node: tok.Node})
	}
	if got := tok.String(); got != tok.ID+"."+tok.Secret {
		t.Errorf("String() = %q", got)
	}
	s := getSecret(t, cs, tok.ID)
	if s.Namespace != "kube-system" || s.Name != "bootstrap-token-"+tok.ID || s.Type != "bootstrap.kubernetes.io/token" {
		t.Errorf("secret %s/%s of type %s", s.Namespace, s.Name, s.Type)
	}
	want := map[string]string{
		"token-id":                    tok.ID,
		"token-secret":                tok.Secret,
		"expiration":                  "2026-12-06T11:00:00Z",
		"description":                 "line 4",
		"usage-bootstrap-tether-join": "true",
		"tether-uses-left":            "3",
		"tether-node":                 "edge-1",
	}
	got := map[string]string{}
	for k, v := range s.Data {
		got[k] = string(v)
	}
	if !maps.Equal(got, want) {
		t.Errorf("data %v, want %v", got, want)
	}
	for _, k := range []string{"usage-bootstrap-authentication", "usage-bootstrap-signing", "auth-extra-groups"} {
		if _, ok := s.Data[k]; ok {
			t.Errorf("data has %s: the token must never authenticate to the API server", k)
		}
	}

	// Defaults: 24h, no limit, any node.
	tok, err = Create(t.Context(), cs, Options{}, t0)
	if err != nil {
		t.Fatal(err)
	}
	s = getSecret(t, cs, tok.ID)
	if tok.Uses != Unlimited || string(s.Data[KeyExpiration]) != "2026-12-07T10:00:00Z" {
		t.Errorf("defaults: uses %d, expiration %s", tok.Uses, s.Data[KeyExpiration])
	}
	for _, k := range []string{KeyUsesLeft, KeyNode} {
		if _, ok := s.Data[k]; ok {
			t.Errorf("defaults: data has %s", k)
		}
	}
}

func TestCreateRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"negative ttl", Options{TTL: -time.Second}, "ttl"},
		{"negative uses", Options{Uses: -1}, "uses"},
		{"bad node", Options{Node: "Edge_1"}, "node"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs, _ := newClient(t)
			_, err := Create(t.Context(), cs, tc.opts, t0)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one naming %s", err, tc.want)
			}
		})
	}
}

func TestCreateRetriesATakenID(t *testing.T) {
	cs, _ := newClient(t)
	calls := 0
	cs.PrependReactor("create", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if calls++; calls == 1 {
			return true, nil, apierrors.NewAlreadyExists(corev1.Resource("secrets"), "taken")
		}
		return false, nil, nil
	})
	if _, err := Create(t.Context(), cs, Options{}, t0); err != nil || calls != 2 {
		t.Fatalf("err %v after %d creates, want success on the second", err, calls)
	}
}

func TestConsume(t *testing.T) {
	cs, updates := newClient(t)
	ctx := t.Context()
	unlimited, err := Create(ctx, cs, Options{}, t0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := Consume(ctx, cs, unlimited.String(), fmt.Sprintf("edge-%d", i), t0.Add(time.Hour)); err != nil {
			t.Fatalf("consume %d of an unlimited token: %v", i, err)
		}
	}
	if n, _ := updates(); n != 0 {
		t.Errorf("an unlimited token was updated %d times", n)
	}

	once, err := Create(ctx, cs, Options{Uses: 1}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Check(ctx, cs, once.String(), "edge-1", t0); err != nil {
		t.Fatalf("check: %v", err)
	}
	if _, err := Check(ctx, cs, once.String(), "edge-1", t0); err != nil {
		t.Fatalf("check again: %v (check must not spend a use)", err)
	}
	if err := Consume(ctx, cs, once.String(), "edge-1", t0); err != nil {
		t.Fatalf("first consume: %v", err)
	}
	if got := string(getSecret(t, cs, once.ID).Data[KeyUsesLeft]); got != "0" {
		t.Errorf("uses left %q after the only use, want 0", got)
	}
	for _, f := range []func() error{
		func() error { return Consume(ctx, cs, once.String(), "edge-2", t0) },
		func() error { _, err := Check(ctx, cs, once.String(), "edge-2", t0); return err },
	} {
		if err := f(); !errors.Is(err, ErrUsedUp) {
			t.Errorf("after the only use: %v, want ErrUsedUp", err)
		}
	}
}

func TestConsumeRefuses(t *testing.T) {
	valid := func(data map[string]string) *corev1.Secret {
		d := map[string][]byte{
			KeyID: []byte("abc123"), KeySecret: []byte("0123456789abcdef"),
			KeyExpiration: []byte("2026-12-07T10:00:00Z"), KeyUsageJoin: []byte("true"),
		}
		for k, v := range data {
			if v == "" {
				delete(d, k)
			} else {
				d[k] = []byte(v)
			}
		}
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bootstrap-token-abc123", Namespace: "kube-system"},
			Type: SecretType, Data: d}
	}
	const good = "abc123.0123456789abcdef"
	for _, tc := range []struct {
		name   string
		secret *corev1.Secret
		token  string
		node   string
		now    time.Time
		want   error
		says   string // in the message
	}{
		{name: "valid", secret: valid(nil), token: good, node: "edge-1", now: t0},
		{name: "unknown id", secret: valid(nil), token: "abc124.0123456789abcdef", node: "edge-1", now: t0, want: ErrUnknown},
		{name: "wrong secret", secret: valid(nil), token: "abc123.0123456789abcdee", node: "edge-1", now: t0, want: ErrUnknown},
		{name: "no usage key", secret: valid(map[string]string{KeyUsageJoin: ""}), token: good, now: t0, want: ErrUnknown},
		{name: "usage key false", secret: valid(map[string]string{KeyUsageJoin: "false"}), token: good, now: t0, want: ErrUnknown},
		{name: "kubeadm token", secret: valid(map[string]string{KeyUsageJoin: "", "usage-bootstrap-authentication": "true"}),
			token: good, now: t0, want: ErrUnknown},
		{name: "other type", secret: func() *corev1.Secret { s := valid(nil); s.Type = corev1.SecretTypeOpaque; return s }(),
			token: good, now: t0, want: ErrUnknown},
		{name: "id not the name", secret: valid(map[string]string{KeyID: "zzz999"}), token: good, now: t0, want: ErrUnknown},
		{name: "expired", secret: valid(nil), token: good, node: "edge-1", now: t0.Add(24 * time.Hour), want: ErrExpired,
			says: "join token expired at 2026-12-07T10:00:00Z: create a new one with `cloudcore token create`"},
		{name: "no expiration", secret: valid(map[string]string{KeyExpiration: ""}), token: good, now: t0.Add(1000 * time.Hour)},
		{name: "bad expiration", secret: valid(map[string]string{KeyExpiration: "tomorrow"}), token: good, now: t0, want: ErrExpired},
		{name: "used up", secret: valid(map[string]string{KeyUsesLeft: "0"}), token: good, now: t0, want: ErrUsedUp},
		{name: "bad uses", secret: valid(map[string]string{KeyUsesLeft: "-2"}), token: good, now: t0, want: ErrUsedUp},
		{name: "its node", secret: valid(map[string]string{KeyNode: "edge-1"}), token: good, node: "edge-1", now: t0},
		{name: "other node", secret: valid(map[string]string{KeyNode: "edge-1"}), token: good, node: "edge-2", now: t0,
			want: ErrOtherNode, says: `node named "edge-1" only, not "edge-2"`},
		{name: "no node name", secret: valid(map[string]string{KeyNode: "edge-1"}), token: good, now: t0, want: ErrOtherNode},
		{name: "malformed", secret: valid(nil), token: "abc123", now: t0, want: ErrMalformed},
		{name: "with pin", secret: valid(nil), token: good + "." + strings.Repeat("a", 64), now: t0, want: ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs, _ := newClient(t, tc.secret)
			_, cerr := Check(t.Context(), cs, tc.token, tc.node, tc.now)
			err := Consume(t.Context(), cs, tc.token, tc.node, tc.now)
			for what, err := range map[string]error{"check": cerr, "consume": err} {
				switch {
				case tc.want == nil && err != nil:
					t.Errorf("%s: %v", what, err)
				case tc.want != nil && !errors.Is(err, tc.want):
					t.Errorf("%s: %v, want %v", what, err, tc.want)
				case err != nil && strings.Contains(err.Error(), "0123456789abcde"):
					t.Errorf("%s: %q repeats the secret", what, err)
				case err != nil && !strings.Contains(err.Error(), tc.says):
					t.Errorf("%s: %q does not say %q", what, err, tc.says)
				}
			}
			if tc.want == ErrUnknown && err.Error() != ErrUnknown.Error() {
				t.Errorf("unknown token says %q, want exactly %q", err, ErrUnknown)
			}
		})
	}
}

// TestConsumeConcurrently has many joins race for a token's uses: exactly
// as many win as there are uses, thanks to the conditional Update. Every
// consumer's first Get waits until all have read the token, so all but one
// of their first Updates conflict.
func TestConsumeConcurrently(t *testing.T) {
	for _, uses := range []int{1, 3} {
		t.Run(fmt.Sprintf("uses=%d", uses), func(t *testing.T) {
			cs, updates := newClient(t)
			tok, err := Create(t.Context(), cs, Options{Uses: uses}, t0)
			if err != nil {
				t.Fatal(err)
			}
			const consumers = 8
			var firstGets sync.WaitGroup
			firstGets.Add(consumers)
			client := barrierClient{Interface: cs, gets: new(atomic.Int32), n: consumers, wg: &firstGets}
			errs := make([]error, consumers)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range consumers {
				wg.Go(func() {
					<-start
					errs[i] = Consume(t.Context(), client, tok.String(), fmt.Sprintf("edge-%d", i), t0)
				})
			}
			close(start)
			wg.Wait()
			won := 0
			for _, err := range errs {
				switch {
				case err == nil:
					won++
				case !errors.Is(err, ErrUsedUp):
					t.Errorf("consume: %v, want success or ErrUsedUp", err)
				}
			}
			n, conflicts := updates()
			if won != uses || n != uses {
				t.Errorf("%d consumers won, %d updates, want %d of each", won, n, uses)
			}
			if conflicts < consumers-1 {
				t.Errorf("%d conflicts, want at least %d", conflicts, consumers-1)
			}
			if got := string(getSecret(t, cs, tok.ID).Data[KeyUsesLeft]); got != "0" {
				t.Errorf("uses left %q, want 0", got)
			}
		})
	}
}

// TestConsumeRetriesConflicts forces conflicts: another replica spends a use
// between this one's Get and Update.
func TestConsumeRetriesConflicts(t *testing.T) {
	cs, _ := newClient(t)
	tok, err := Create(t.Context(), cs, Options{Uses: 2}, t0)
	if err != nil {
		t.Fatal(err)
	}
	// The first Update of this consumer finds that a rival replica has
	// spent a use since the Get (the rival's write goes straight to the
	// tracker): it conflicts, reads again, sees one use left and spends it.
	// A third consumer then finds none.
	gvr := corev1.SchemeGroupVersion.WithResource("secrets")
	rival := true
	cs.PrependReactor("update", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if !rival {
			return false, nil, nil
		}
		rival = false
		obj, err := cs.Tracker().Get(gvr, Namespace, SecretName(tok.ID))
		if err != nil {
			return true, nil, err
		}
		s := obj.(*corev1.Secret).DeepCopy()
		s.Data[KeyUsesLeft] = []byte("1")
		s.ResourceVersion += "-rival"
		if err := cs.Tracker().Update(gvr, s, Namespace); err != nil {
			return true, nil, err
		}
		return false, nil, nil // on to the conflict-checking reactor
	})
	if err := Consume(t.Context(), cs, tok.String(), "edge-1", t0); err != nil {
		t.Fatalf("consume after a conflict: %v", err)
	}
	if got := string(getSecret(t, cs, tok.ID).Data[KeyUsesLeft]); got != "0" {
		t.Errorf("uses left %q, want 0", got)
	}
	if err := Consume(t.Context(), cs, tok.String(), "edge-2", t0); !errors.Is(err, ErrUsedUp) {
		t.Errorf("third consume: %v, want ErrUsedUp", err)
	}

	// Conflicts without end give up with an error that is none of ours.
	defer func(b wait.Backoff) { conflictBackoff = b }(conflictBackoff)
	conflictBackoff.Duration, conflictBackoff.Cap = time.Microsecond, time.Millisecond
	tok, err = Create(t.Context(), cs, Options{Uses: 2}, t0)
	if err != nil {
		t.Fatal(err)
	}
	cs.PrependReactor("update", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewConflict(gvr.GroupResource(), "x", errors.New("busy"))
	})
	err = Consume(t.Context(), cs, tok.String(), "edge-1", t0)
	if !apierrors.IsConflict(err) || !strings.Contains(err.Error(), "try again") {
		t.Errorf("endless conflicts: %v, want a conflict saying try again", err)
	}
}

func TestConsumeDeletedToken(t *testing.T) {
	cs, _ := newClient(t)
	tok, err := Create(t.Context(), cs, Options{Uses: 5}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := Delete(t.Context(), cs, tok.ID); err != nil {
		t.Fatal(err)
	}
	if err := Consume(t.Context(), cs, tok.String(), "edge-1", t0); !errors.Is(err, ErrUnknown) {
		t.Errorf("consume a deleted token: %v, want ErrUnknown", err)
	}
	if err := Delete(t.Context(), cs, tok.ID); !errors.Is(err, ErrUnknown) {
		t.Errorf("delete again: %v, want ErrUnknown", err)
	}
	if err := Delete(t.Context(), cs, "../etc"); !errors.Is(err, ErrMalformed) {
		t.Errorf("delete a bad id: %v, want ErrMalformed", err)
	}
}

func TestListAndDelete(t *testing.T) {
	kubeadm := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bootstrap-token-kkkkkk", Namespace: Namespace},
		Type: SecretType, Data: map[string][]byte{KeyID: []byte("kkkkkk"), KeySecret: []byte("0123456789abcdef"),
			"usage-bootstrap-authentication": []byte("true")}}
	cs, _ := newClient(t, kubeadm)
	var ids []string
	for _, o := range []Options{{}, {Uses: 2, Node: "edge-1", Description: "x"}} {
		tok, err := Create(t.Context(), cs, o, t0)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, tok.ID)
	}
	slices.Sort(ids)
	list, err := List(t.Context(), cs)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, tok := range list {
		got = append(got, tok.ID)
		if tok.Secret != "" {
			t.Errorf("list shows the secret of %s", tok.ID)
		}
		if tok.Node == "edge-1" && (tok.Uses != 2 || tok.Description != "x") {
			t.Errorf("listed %+v", tok)
		}
	}
	if !slices.Equal(got, ids) {
		t.Errorf("listed %v, want %v (and not kubeadm's token)", got, ids)
	}
	if err := Delete(t.Context(), cs, "kkkkkk"); !errors.Is(err, ErrUnknown) {
		t.Errorf("delete kubeadm's token: %v, want ErrUnknown", err)
	}
	if err := Delete(t.Context(), cs, ids[0]); err != nil {
		t.Fatal(err)
	}
	if list, _ := List(t.Context(), cs); len(list) != 1 || list[0].ID != ids[1] {
		t.Errorf("after delete: %v", list)
	}
}

func TestRandomString(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		s, err := randomString(16)
		if err != nil {
			t.Fatal(err)
		}
		if len(s) != 16 || strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789") != "" || seen[s] {
			t.Fatalf("randomString = %q (or a repeat)", s)
		}
		seen[s] = true
	}
}

// barrierClient holds the first n Gets of Secrets until all n have been
// made, so that n consumers read the same resourceVersion.
type barrierClient struct {
	kubernetes.Interface
	gets *atomic.Int32
	n    int32
	wg   *sync.WaitGroup
}

func (c barrierClient) CoreV1() corev1client.CoreV1Interface {
	return barrierCore{c.Interface.CoreV1(), c}
}

type barrierCore struct {
	corev1client.CoreV1Interface
	c barrierClient
}

func (c barrierCore) Secrets(ns string) corev1client.SecretInterface {
	return barrierSecrets{c.CoreV1Interface.Secrets(ns), c.c}
}

type barrierSecrets struct {
	corev1client.SecretInterface
	c barrierClient
}

func (s barrierSecrets) Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.Secret, error) {
	sec, err := s.SecretInterface.Get(ctx, name, opts)
	if s.c.gets.Add(1) <= s.c.n {
		s.c.wg.Done()
		s.c.wg.Wait()
	}
	return sec, err
}

func TestJoinStringRoundTrip(t *testing.T) {
	cs, _ := newClient(t)
	tok, err := Create(t.Context(), cs, Options{}, t0)
	if err != nil {
		t.Fatal(err)
	}
	pin := "sha256:" + strings.Repeat("ab", 32)
	s := JoinString(tok, pin)
	if want := tok.ID + "." + tok.Secret + "." + strings.Repeat("ab", 32); s != want {
		t.Fatalf("JoinString = %q, want %q", s, want)
	}
	bootstrap, caHash, err := ParseJoinString(s)
	if err != nil || bootstrap != tok.String() || caHash != pin {
		t.Fatalf("ParseJoinString = %q, %q, %v", bootstrap, caHash, err)
	}
	if err := Consume(t.Context(), cs, bootstrap, "edge-1", t0); err != nil {
		t.Errorf("consume the parsed token: %v", err)
	}
	if _, _, err := ParseJoinString(tok.String()); !errors.Is(err, ErrMalformed) {
		t.Errorf("a join string without a pin: %v, want ErrMalformed", err)
	}
}
