package cri

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/tether-edge/tether/edgecore/events"
)

// pullState is an image pull, with one set of credentials (pullKey),
// running in the background, failed, or done a moment ago.
type pullState struct {
	running bool
	// started is when the running pull began.
	started time.Time
	err     error
	retryAt time.Time
	// reported: the failure was shown once as ErrImagePull; later syncs in
	// the back-off show ImagePullBackOff.
	reported bool
	// pulled is the Pulled event's message of a pull a pod waited for,
	// until a pod's sync finds the image and reports it.
	pulled string
}

// pullKey names the pulls of image with auth: one pod's pull, or its
// success, never stands for another pod's credentials.
func pullKey(image string, auth *runtimeapi.AuthConfig) string {
	if auth == nil {
		return image
	}
	h := sha256.New()
	for _, f := range []string{auth.Username, auth.Password, auth.Auth, auth.IdentityToken, auth.RegistryToken} {
		h.Write([]byte(f))
		h.Write([]byte{0})
	}
	return image + "\x00" + hex.EncodeToString(h.Sum(nil)[:12])
}

// pullAlwaysWait is how long a PullAlways container whose image is present
// waits for its pull before it starts the image present: a registry that
// does not answer within it is taken as unreachable (offline autonomy).
const pullAlwaysWait = 10 * time.Second

// refusedByRegistry reports whether a pull failed because the registry
// answered no (credentials refused, no such image), as opposed to a
// registry that could not be reached.
func refusedByRegistry(err error) bool {
	msg := strings.ToLower(err.Error())
	for _, m := range []string{"401", "403", "unauthorized", "forbidden", "denied", "not found", "manifest unknown"} {
		if strings.Contains(msg, m) {
			return true
		}
	}
	return false
}

// pullPolicy is the container's policy, defaulted as the API server does.
func pullPolicy(c *corev1.Container) corev1.PullPolicy {
	if c.ImagePullPolicy != "" {
		return c.ImagePullPolicy
	}
	ref := c.Image
	if i := strings.LastIndex(ref, "@"); i >= 0 {
		return corev1.PullIfNotPresent
	}
	slash := strings.LastIndex(ref, "/")
	colon := strings.LastIndex(ref, ":")
	if colon <= slash || strings.HasSuffix(ref, ":latest") {
		return corev1.PullAlways
	}
	return corev1.PullIfNotPresent
}

// image checks c's image with ImageStatus before any pull. It returns the
// image to create the container from, or why the container must wait:
// the pull is running (ContainerCreating), failed (ErrImagePull, then
// ImagePullBackOff until the back-off ends), or is not allowed
// (ErrImageNeverPull). With PullAlways and the image present, the
// container waits for its own pull, with its pod's credentials, as the
// kubelet's: the registry refusing it (credentials, no such image) is
// ErrImagePull, so a pod cannot run a private image another pod pulled;
// a registry that cannot be reached (or does not answer within
// pullAlwaysWait) lets the image present start, so a node without its
// registry still starts what it has.
func (s *podSync) image(ctx context.Context, c *corev1.Container) (string, *corev1.ContainerStateWaiting) {
	r := s.r
	cctx, cancel := r.call(ctx)
	resp, err := r.is.ImageStatus(cctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: c.Image}})
	cancel()
	if err != nil {
		r.event(s.pod, c.Name, events.Warning, events.InspectFailed, "Failed to inspect image %q: %v", c.Image, err)
		return "", &corev1.ContainerStateWaiting{Reason: "ErrImageInspect",
			Message: fmt.Sprintf("inspect image %q: %v", c.Image, err)}
	}
	policy := pullPolicy(c)
	auth := s.pullAuth(c.Image)
	key := pullKey(c.Image, auth)
	if img := resp.Image; img != nil {
		if img.Uid != nil {
			s.imageUser[c.Name] = img.Uid.Value
		} else if img.Username == "" {
			s.imageUser[c.Name] = 0
		} else {
			s.imageUser[c.Name] = -1 // a user name: cannot tell if it is root
		}
		if policy == corev1.PullAlways {
			if w := s.pullAlways(c, auth, key); w != nil {
				return "", w
			}
		}
		pulled := ""
		r.mu.Lock()
		if p := r.pulls[key]; p != nil {
			pulled, p.pulled = p.pulled, ""
			if !p.running && policy != corev1.PullAlways {
				delete(r.pulls, key)
			}
		}
		r.mu.Unlock()
		if pulled != "" {
			r.event(s.pod, c.Name, events.Normal, events.Pulled, "%s", pulled)
		} else {
			r.event(s.pod, c.Name, events.Normal, events.Pulled, "Container image %q already present on machine", c.Image)
		}
		return c.Image, nil
	}
	if policy == corev1.PullNever {
		msg := fmt.Sprintf("Container image %q is not present with pull policy of Never", c.Image)
		r.event(s.pod, c.Name, events.Warning, events.ErrImageNeverPull, "%s", msg)
		r.event(s.pod, c.Name, events.Warning, events.Failed, "Error: ErrImageNeverPull")
		return "", &corev1.ContainerStateWaiting{Reason: "ErrImageNeverPull", Message: msg}
	}
	r.mu.Lock()
	p := r.pulls[key]
	if p != nil && p.err != nil && !p.running && s.now.Before(p.retryAt) {
		r.mu.Unlock()
		return s.pullFailed(c, p)
	}
	r.mu.Unlock()
	if r.pull(c.Image, auth, s.now, true) {
		r.event(s.pod, c.Name, events.Normal, events.Pulling, "Pulling image %q", c.Image)
	}
	return "", &corev1.ContainerStateWaiting{Reason: "ContainerCreating",
		Message: fmt.Sprintf("pulling image %q", c.Image)}
}

// pullAlways decides for a PullAlways container whose image is present:
// nil to start it, or why it waits (its pull runs, or the registry refused
// it). See image.
func (s *podSync) pullAlways(c *corev1.Container, auth *runtimeapi.AuthConfig, key string) *corev1.ContainerStateWaiting {
	r := s.r
	r.mu.Lock()
	p := r.pulls[key]
	switch {
	case p != nil && p.running:
		waited := s.now.Sub(p.started)
		r.mu.Unlock()
		if waited < pullAlwaysWait {
			return &corev1.ContainerStateWaiting{Reason: "ContainerCreating", Message: fmt.Sprintf("pulling image %q", c.Image)}
		}
		r.log.Info("registry does not answer: starting the image present", slog.String("image", c.Image),
			slog.Duration("waited", waited))
		return nil
	case p != nil && s.now.Before(p.retryAt):
		// The last pull with these credentials: done a moment ago, or
		// failed in its back-off.
		refused := p.err != nil && refusedByRegistry(p.err)
		r.mu.Unlock()
		if refused {
			_, w := s.pullFailed(c, p)
			return w
		}
		return nil // pulled, or the registry cannot be reached: the image present
	}
	r.mu.Unlock()
	if r.pull(c.Image, auth, s.now, true) {
		r.event(s.pod, c.Name, events.Normal, events.Pulling, "Pulling image %q", c.Image)
	}
	return &corev1.ContainerStateWaiting{Reason: "ContainerCreating", Message: fmt.Sprintf("pulling image %q", c.Image)}
}

// pullFailed is the waiting state of a container whose pull p failed:
// ErrImagePull the first time, ImagePullBackOff until the back-off ends.
func (s *podSync) pullFailed(c *corev1.Container, p *pullState) (string, *corev1.ContainerStateWaiting) {
	r := s.r
	r.mu.Lock()
	pullErr, first := p.err, !p.reported
	p.reported = true
	r.mu.Unlock()
	if first {
		r.event(s.pod, c.Name, events.Warning, events.Failed, "Failed to pull image %q: %v", c.Image, pullErr)
		r.event(s.pod, c.Name, events.Warning, events.Failed, "Error: ErrImagePull")
		return "", &corev1.ContainerStateWaiting{Reason: "ErrImagePull",
			Message: fmt.Sprintf("pull image %q: %v", c.Image, pullErr)}
	}
	r.event(s.pod, c.Name, events.Normal, events.BackOff, "Back-off pulling image %q", c.Image)
	r.event(s.pod, c.Name, events.Warning, events.Failed, "Error: ImagePullBackOff")
	return "", &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff",
		Message: fmt.Sprintf("Back-off pulling image %q: %v", c.Image, pullErr)}
}

// pull starts a background pull of image (with auth, from the pod's
// imagePullSecrets, if any) unless one runs or the last one
// failed less than its back-off ago (when force is false, also unless one
// succeeded less than BackoffInitial ago). Notify is called when it ends.
// It reports whether it started one. A pod waits for a forced pull (its
// image is missing): when it succeeds, the Pulled event's message is kept
// for the sync that finds the image.
func (r *Runtime) pull(image string, auth *runtimeapi.AuthConfig, now time.Time, force bool) bool {
	key := pullKey(image, auth)
	r.mu.Lock()
	p := r.pulls[key]
	if p != nil && (p.running || (now.Before(p.retryAt) && (p.err != nil || !force))) {
		r.mu.Unlock()
		return false
	}
	if p == nil {
		p = &pullState{}
		r.pulls[key] = p
	}
	p.running, p.started = true, now
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		start := time.Now()
		ctx, cancel := context.WithTimeout(r.bg, r.cfg.PullTimeout.Duration)
		_, err := r.is.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}, Auth: auth})
		cancel()
		if r.bg.Err() != nil {
			return
		}
		took := time.Since(start).Round(time.Millisecond)
		pulled := ""
		if err == nil && force {
			var size uint64
			sctx, cancel := r.call(r.bg)
			if st, serr := r.is.ImageStatus(sctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: image}}); serr == nil {
				size = st.GetImage().GetSize_()
			}
			cancel()
			pulled = fmt.Sprintf("Successfully pulled image %q in %v (%v including waiting). Image size: %d bytes.", image, took, took, size)
		}
		var delay time.Duration
		r.mu.Lock()
		p.running = false
		if err == nil {
			r.pullBack.forget(key)
			p.err, p.reported, p.pulled = nil, false, pulled
			// An Always pull is not repeated for a while.
			p.retryAt = time.Now().Add(r.cfg.BackoffInitial.Duration)
		} else {
			delay = r.pullBack.next(key, time.Now())
			p.err, p.reported, p.retryAt = err, false, time.Now().Add(delay)
		}
		r.mu.Unlock()
		if err != nil {
			r.log.Warn("image pull failed", slog.String("image", image), slog.Duration("retry", delay), slog.Any("err", err))
			r.notifyAfter(delay)
		} else {
			r.log.Info("image pulled", slog.String("image", image), slog.Duration("took", took))
		}
		r.notify()
	}()
	return true
}
