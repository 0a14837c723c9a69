package metaserver

import (
	"errors"
	"fmt"
	"sort"
	"sync"

	"k8s.io/apimachinery/pkg/watch"
)

// entry is one object the cache holds: where it is, the version the store
// holds (to tell changes), the resourceVersion served and its encoding.
type entry struct {
	uid, namespace, name string
	// source is the version of the object's source: the store's
	// resourceVersion (the cloud's) for stored kinds.
	source string
	// rv is the resourceVersion served: the cache's version at the last
	// change of the object.
	rv uint64
	// data is the object's Kubernetes protobuf encoding; never modified.
	data []byte
}

// event is one change of one object.
type event struct {
	typ watch.EventType // Added, Modified or Deleted
	rv  uint64
	// data is the object after the change; for Deleted its last state.
	data []byte
	// prev is the object before a Modified change, so that a watch with a
	// selector can tell an object that starts or stops matching.
	prev []byte
}

// history is what the cache holds of one resource.
type history struct {
	objects map[string]*entry // by UID
	names   map[string]string // namespace/name -> UID
	// ring holds the latest events, oldest first from head, n of them.
	ring []event
	head int
	n    int
	// complete is the version after which every event of the resource is
	// in the ring: a watch can resume from any version >= complete.
	complete uint64
}

func (h *history) push(e event) {
	if len(h.ring) == 0 {
		h.complete = e.rv
		return
	}
	i := (h.head + h.n) % len(h.ring)
	if h.n == len(h.ring) {
		h.complete = h.ring[h.head].rv
		h.head = (h.head + 1) % len(h.ring)
		h.n--
	}
	h.ring[i] = e
	h.n++
}

// errExpired says a watch asked for a version the ring no longer covers.
var errExpired = errors.New("too old resource version")

// upsert is a new or changed object handed to apply.
type upsert struct {
	uid, namespace, name, source string
	data                         []byte
}

// cache is the watch cache: per resource, the objects held (encoded, as the
// store holds them) and a bounded ring of the latest changes, with one
// version counter across resources, like etcd's revision. It does no IO;
// the Server feeds it what it reads from the store.
//
// Versions are uint64 numbers from base up. base differs for every start of
// the Server (see epoch), so a version from an earlier run is older than
// every version of this one and a watch from it gets 410 Gone.
type cache struct {
	mu sync.Mutex
	// rv is the latest version; guarded by mu.
	rv uint64
	// res holds each resource's history; guarded by mu.
	res map[string]*history
	// changed is closed, and replaced, whenever rv advances; guarded by mu.
	changed chan struct{}
}

func newCache(base uint64, ringSize int, resources []string) *cache {
	c := &cache{rv: base, res: map[string]*history{}, changed: make(chan struct{})}
	for _, r := range resources {
		c.res[r] = &history{objects: map[string]*entry{}, names: map[string]string{},
			ring: make([]event, ringSize), complete: base}
	}
	return c
}

// version returns the latest version.
func (c *cache) version() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rv
}

// sources returns, for every object of resource, its source version by
// UID.
func (c *cache) sources(resource string) map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.res[resource]
	out := make(map[string]string, len(h.objects))
	for uid, e := range h.objects {
		out[uid] = e.source
	}
	return out
}

// apply records a change of resource: objects deleted (by UID) and objects
// new or changed. Each gets its own version and event. With initial set,
// the objects are the state at start: they take the current version and
// make no events.
func (c *cache) apply(resource string, deleted []string, upserts []upsert, initial bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.res[resource]
	before := c.rv
	for _, uid := range deleted {
		e, ok := h.objects[uid]
		if !ok {
			continue
		}
		delete(h.objects, uid)
		if key := e.namespace + "/" + e.name; h.names[key] == uid {
			delete(h.names, key)
		}
		c.rv++
		h.push(event{typ: watch.Deleted, rv: c.rv, data: e.data})
	}
	for _, u := range upserts {
		var rv uint64
		if !initial {
			c.rv++
			rv = c.rv
		} else {
			rv = c.rv
		}
		old := h.objects[u.uid]
		if old != nil && old.namespace+"/"+old.name != u.namespace+"/"+u.name {
			// Names do not change in Kubernetes; if one did, forget the old.
			if key := old.namespace + "/" + old.name; h.names[key] == u.uid {
				delete(h.names, key)
			}
		}
		h.objects[u.uid] = &entry{uid: u.uid, namespace: u.namespace, name: u.name, source: u.source, rv: rv, data: u.data}
		h.names[u.namespace+"/"+u.name] = u.uid
		switch {
		case initial:
		case old == nil:
			h.push(event{typ: watch.Added, rv: rv, data: u.data})
		default:
			h.push(event{typ: watch.Modified, rv: rv, data: u.data, prev: old.data})
		}
	}
	if c.rv != before {
		close(c.changed)
		c.changed = make(chan struct{})
	}
}

// list returns the objects of resource in namespace ("" for all), sorted by
// namespace and name, and the version they are the state at.
func (c *cache) list(resource, namespace string) ([]*entry, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.res[resource]
	out := make([]*entry, 0, len(h.objects))
	for _, e := range h.objects {
		if namespace == "" || e.namespace == namespace {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].namespace != out[j].namespace {
			return out[i].namespace < out[j].namespace
		}
		return out[i].name < out[j].name
	})
	return out, c.rv
}

// get returns the object of resource named namespace/name, or nil.
func (c *cache) get(resource, namespace, name string) *entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.res[resource]
	uid, ok := h.names[namespace+"/"+name]
	if !ok {
		return nil
	}
	return h.objects[uid]
}

// since returns the events of resource after version from, the latest
// version, and a channel closed at the next change. It returns errExpired
// if some of those events are no longer held, or from is not a version of
// this run.
func (c *cache) since(resource string, from uint64) ([]event, uint64, <-chan struct{}, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.res[resource]
	if from < h.complete || from > c.rv {
		return nil, c.rv, c.changed, fmt.Errorf("%w: %d (the oldest held is %d, the latest %d)", errExpired, from, h.complete, c.rv)
	}
	var out []event
	for i := 0; i < h.n; i++ {
		e := h.ring[(h.head+i)%len(h.ring)]
		if e.rv > from {
			out = append(out, e)
		}
	}
	return out, c.rv, c.changed, nil
}
