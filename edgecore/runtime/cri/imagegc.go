package cri

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"syscall"
	"time"

	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Image garbage collection, as the kubelet's image GC manager does it:
// every ImageGCPeriod, when the image file system is used at
// ImageGCHighThresholdPercent or more, the unused images are removed, least
// recently used first, until its use is below ImageGCLowThresholdPercent.
// An image is used when a container (running or not) was made from it, it
// is pinned (the sandbox image, PauseImage or pinned by containerd), or a
// pod the node holds names it (Config.HeldImages: the store's pods, also
// while the cloud is away, and the static pods). An image seen for less
// than ImageMinimumGCAge is kept. Under disk pressure the node monitor asks
// for every unused image old enough to go (GarbageCollect with all).

// gcImage is what the selection knows of an image.
type gcImage struct {
	ID   string
	Tags []string
	Size uint64
	// FirstSeen is when GC first listed it; LastUsed when it last saw it
	// used (zero: never).
	FirstSeen, LastUsed time.Time
	// InUse: a container, a held pod or the pin needs it.
	InUse bool
}

// gcPolicy is the thresholds of Config.
type gcPolicy struct {
	High, Low int
	MinAge    time.Duration
}

// amountToFree is how many bytes to free on a file system of capacity
// bytes with avail available: none while its use is below High percent,
// else enough to bring it down to Low percent.
func amountToFree(p gcPolicy, capacity, avail uint64) uint64 {
	if capacity == 0 || avail > capacity || p.High >= 100 {
		return 0
	}
	usedPct := 100 - avail*100/capacity
	if usedPct < uint64(p.High) {
		return 0
	}
	target := capacity * uint64(100-p.Low) / 100 // bytes to be available
	if avail >= target {
		return 0
	}
	return target - avail
}

// selectImages returns the images to remove to free want bytes (all that
// may go when want is math.MaxUint64): neither in use nor seen for less
// than minAge at now, least recently used first, then first seen first;
// and how many bytes they hold.
func selectImages(imgs []gcImage, want uint64, now time.Time, minAge time.Duration) ([]gcImage, uint64) {
	var eligible []gcImage
	for _, im := range imgs {
		if im.InUse || now.Sub(im.FirstSeen) < minAge {
			continue
		}
		eligible = append(eligible, im)
	}
	slices.SortStableFunc(eligible, func(a, b gcImage) int {
		if c := a.LastUsed.Compare(b.LastUsed); c != 0 {
			return c
		}
		if c := a.FirstSeen.Compare(b.FirstSeen); c != 0 {
			return c
		}
		return compareStrings(a.ID, b.ID)
	})
	var out []gcImage
	var freed uint64
	for _, im := range eligible {
		if freed >= want {
			break
		}
		out = append(out, im)
		freed += im.Size
	}
	return out, freed
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// imageRecord is what GC remembers of an image between runs.
type imageRecord struct {
	firstSeen, lastUsed time.Time
}

// GCResult says what a garbage collection did.
type GCResult struct {
	// Want is how many bytes it had to free (math.MaxUint64: every unused
	// image).
	Want uint64
	// Freed is the size of the images removed; Removed their IDs and tags.
	Freed   uint64
	Removed []string
	// Kept are the images kept because they are in use or pinned.
	Kept int
}

// GarbageCollect removes unused images: when all is false, only if the
// image file system is used at the high threshold or more, and until its
// use is below the low one; when all is true (disk pressure), every unused
// image older than the minimum age. It fails when it could not free what
// it wanted. Runs are serialized.
func (r *Runtime) GarbageCollect(ctx context.Context, all bool) (GCResult, error) {
	r.gcMu.Lock()
	defer r.gcMu.Unlock()
	var res GCResult
	now := time.Now()
	imgs, err := r.gcImages(ctx, now)
	if err != nil {
		return res, fmt.Errorf("image gc: %w", err)
	}
	res.Want = math.MaxUint64
	if !all {
		dir, err := r.ImageFS(ctx)
		if err != nil {
			return res, fmt.Errorf("image gc: %w", err)
		}
		var st syscall.Statfs_t
		if err := syscall.Statfs(dir, &st); err != nil {
			return res, fmt.Errorf("image gc: statfs %s: %w", dir, err)
		}
		res.Want = amountToFree(r.gcPolicy(), st.Blocks*uint64(st.Bsize), st.Bavail*uint64(st.Bsize))
		if res.Want == 0 {
			return res, nil
		}
	}
	for _, im := range imgs {
		if im.InUse {
			res.Kept++
		}
	}
	remove, _ := selectImages(imgs, res.Want, now, r.cfg.ImageMinimumGCAge.Duration)
	var errs []error
	for _, im := range remove {
		cctx, cancel := r.call(ctx)
		_, err := r.is.RemoveImage(cctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: im.ID}})
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("remove image %s %v: %w", im.ID, im.Tags, err))
			continue
		}
		res.Freed += im.Size
		res.Removed = append(res.Removed, im.ID)
		r.log.Info("image removed by garbage collection", slog.String("image", im.ID), slog.Any("tags", im.Tags),
			slog.Uint64("size", im.Size), slog.Bool("disk_pressure", all))
		delete(r.imageRecords, im.ID)
	}
	if !all && res.Freed < res.Want {
		errs = append(errs, fmt.Errorf("wanted to free %d bytes, but freed %d bytes of images that are unused and older than %s",
			res.Want, res.Freed, r.cfg.ImageMinimumGCAge.Duration))
	}
	if err := errors.Join(errs...); err != nil {
		return res, fmt.Errorf("image gc: %w", err)
	}
	return res, nil
}

func (r *Runtime) gcPolicy() gcPolicy {
	return gcPolicy{High: r.cfg.ImageGCHighThresholdPercent, Low: r.cfg.ImageGCLowThresholdPercent,
		MinAge: r.cfg.ImageMinimumGCAge.Duration}
}

// gcImages lists the images, says which are in use and updates the
// records (gcMu held).
func (r *Runtime) gcImages(ctx context.Context, now time.Time) ([]gcImage, error) {
	cctx, cancel := r.call(ctx)
	defer cancel()
	list, err := r.is.ListImages(cctx, &runtimeapi.ListImagesRequest{})
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	// Every container of the runtime, ours or not, running or not, keeps
	// its image, as the kubelet's do.
	conts, err := r.rs.ListContainers(cctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	used := map[string]bool{}
	for _, c := range conts.Containers {
		used[c.ImageRef] = true
		if c.Image != nil {
			used[c.Image.Image] = true
		}
	}
	// The pause image and the images of the pods the node holds: by the
	// runtime's own resolution of the name.
	refs := []string{}
	if pause := r.sandboxImage(cctx); pause != "" {
		refs = append(refs, pause)
	}
	if r.cfg.HeldImages != nil {
		held, err := r.cfg.HeldImages()
		if err != nil {
			// Not knowing which images the pods need, remove none.
			return nil, fmt.Errorf("images of the pods held: %w", err)
		}
		refs = append(refs, held...)
	}
	for _, ref := range refs {
		if used[ref] {
			continue
		}
		used[ref] = true
		st, err := r.is.ImageStatus(cctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		if err != nil {
			return nil, fmt.Errorf("image status %s: %w", ref, err)
		}
		if st.Image != nil {
			used[st.Image.Id] = true
		}
	}
	seen := map[string]bool{}
	var out []gcImage
	for _, im := range list.Images {
		seen[im.Id] = true
		rec := r.imageRecords[im.Id]
		if rec == nil {
			rec = &imageRecord{firstSeen: now}
			r.imageRecords[im.Id] = rec
		}
		inUse := im.Pinned || used[im.Id]
		for _, t := range append(slices.Clone(im.RepoTags), im.RepoDigests...) {
			inUse = inUse || used[t]
		}
		if inUse {
			rec.lastUsed = now
		}
		out = append(out, gcImage{ID: im.Id, Tags: im.RepoTags, Size: im.Size_, FirstSeen: rec.firstSeen,
			LastUsed: rec.lastUsed, InUse: inUse})
	}
	for id := range r.imageRecords {
		if !seen[id] {
			delete(r.imageRecords, id)
		}
	}
	return out, nil
}

// sandboxImage is the pause image: PauseImage, else the sandbox_image
// containerd reports in its verbose status (its CRI config).
func (r *Runtime) sandboxImage(ctx context.Context) string {
	if r.cfg.PauseImage != "" {
		return r.cfg.PauseImage
	}
	resp, err := r.rs.Status(ctx, &runtimeapi.StatusRequest{Verbose: true})
	if err != nil {
		return ""
	}
	var cfg struct {
		SandboxImage string `json:"sandboxImage"`
	}
	if err := json.Unmarshal([]byte(resp.Info["config"]), &cfg); err != nil {
		return ""
	}
	return cfg.SandboxImage
}

// ImageFS is the mount point of the runtime's image file system (CRI
// ImageFsInfo).
func (r *Runtime) ImageFS(ctx context.Context) (string, error) {
	cctx, cancel := r.call(ctx)
	defer cancel()
	resp, err := r.is.ImageFsInfo(cctx, &runtimeapi.ImageFsInfoRequest{})
	if err != nil {
		return "", fmt.Errorf("image fs info: %w", err)
	}
	for _, fs := range resp.ImageFilesystems {
		if m := fs.GetFsId().GetMountpoint(); m != "" {
			return m, nil
		}
	}
	return "", errors.New("image fs info: no image file system")
}

// RuntimeConditions is the runtime's answer to the CRI Status call: its
// conditions (RuntimeReady, NetworkReady). A failed call's error is only
// its gRPC code, the same from one call to the next.
func (r *Runtime) RuntimeConditions(ctx context.Context) ([]*runtimeapi.RuntimeCondition, error) {
	resp, err := r.rs.Status(ctx, &runtimeapi.StatusRequest{})
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("CRI status: %s", status.Code(err))
	}
	return resp.GetStatus().GetConditions(), nil
}

// runGC runs the periodic garbage collection until ctx ends.
func (r *Runtime) runGC(ctx context.Context) {
	t := time.NewTicker(r.cfg.ImageGCPeriod.Duration)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if res, err := r.GarbageCollect(ctx, false); err != nil && ctx.Err() == nil {
			r.log.Warn("image garbage collection", slog.Any("err", err), slog.Uint64("freed", res.Freed))
		}
	}
}
