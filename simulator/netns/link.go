package netns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Impairment is what a Link does to the packets it carries, the same in
// each direction.
type Impairment struct {
	// Delay holds every packet back this long in each direction: a round
	// trip takes 2*Delay longer.
	Delay time.Duration
	// Jitter adds a uniformly random extra delay in [0, Jitter) to each
	// packet. Packets keep their order (a packet never leaves before the
	// one ahead of it), as on a real link.
	Jitter time.Duration
	// Loss is the share of packets dropped, 0 to 1.
	Loss float64
}

func (i Impairment) validate() error {
	if i.Delay < 0 || i.Jitter < 0 {
		return fmt.Errorf("impairment: delay %s, jitter %s: must not be negative", i.Delay, i.Jitter)
	}
	if !(i.Loss >= 0 && i.Loss <= 1) {
		return fmt.Errorf("impairment: loss %v: want 0 to 1", i.Loss)
	}
	return nil
}

// QueueLimit is how many packets a Link holds per direction (those waiting
// out the delay); past it, packets are dropped as a full router queue
// would.
const QueueLimit = 1 << 16

// End is one end of a Link.
type End struct {
	// NS is the namespace the end is in (nil: the host's).
	NS *Namespace
	// Dev is the TUN device's name.
	Dev string
	// Addr is the end's address; the other end is its peer.
	Addr netip.Addr
}

// DirStats counts the packets one direction of a Link read, and how many
// of them it dropped (loss, partition, full queue). Bytes are IP packet
// lengths: IP, TCP and TLS headers included.
type DirStats struct {
	Packets      int64
	Bytes        int64
	Dropped      int64
	DroppedBytes int64
}

// LinkStats are a Link's counters since it was made.
type LinkStats struct {
	AToB, BToA DirStats
}

// linkState is what the forwarders read for every packet.
type linkState struct {
	imp         Impairment
	partitioned bool
}

// Link is a point-to-point IP link between two namespaces, emulated in this
// process (see the package doc).
type Link struct {
	A, B End

	log   *slog.Logger
	state atomic.Pointer[linkState]
	files [2]*os.File
	stats [2]dirCounters // 0: A to B, 1: B to A
	wg    sync.WaitGroup
	once  sync.Once
}

type dirCounters struct {
	packets, bytes, dropped, droppedBytes atomic.Int64
}

// Link makes a link from a to b (either may be nil, the host's namespace,
// but not both) with the given impairment, and starts carrying packets.
// A's address is the lower of a fresh pair in 198.18.0.0/15.
func (n *Network) Link(ctx context.Context, a, b *Namespace, imp Impairment) (*Link, error) {
	if a == nil && b == nil {
		return nil, errors.New("netns: link: both ends in the host's namespace")
	}
	if err := imp.validate(); err != nil {
		return nil, fmt.Errorf("netns: link: %w", err)
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, errors.New("netns: network closed")
	}
	idx := len(n.links)
	addrA, addrB := subnet(n.nextSubnet)
	n.nextSubnet++
	l := &Link{
		A:   End{NS: a, Dev: fmt.Sprintf("tt%x-%da", os.Getpid(), idx), Addr: addrA},
		B:   End{NS: b, Dev: fmt.Sprintf("tt%x-%db", os.Getpid(), idx), Addr: addrB},
		log: n.log,
	}
	l.state.Store(&linkState{imp: imp})
	n.links = append(n.links, l)
	n.mu.Unlock()

	for i, e := range []End{l.A, l.B} {
		f, err := openTUN(e)
		if err != nil {
			l.close()
			return nil, err
		}
		l.files[i] = f
	}
	for _, p := range [][2]End{{l.A, l.B}, {l.B, l.A}} {
		e, peer := p[0], p[1]
		if err := ip(ctx, e.NS, "addr", "add", e.Addr.String(), "peer", peer.Addr.String()+"/32", "dev", e.Dev); err != nil {
			l.close()
			return nil, fmt.Errorf("netns: link: %w", err)
		}
		if err := ip(ctx, e.NS, "link", "set", "dev", e.Dev, "up"); err != nil {
			l.close()
			return nil, fmt.Errorf("netns: link: %w", err)
		}
	}
	l.wg.Add(2)
	go l.forward(0, l.files[0], l.files[1])
	go l.forward(1, l.files[1], l.files[0])
	n.log.Debug("link made", slog.String("a", a.String()), slog.String("b", b.String()),
		slog.String("addrA", addrA.String()), slog.String("addrB", addrB.String()))
	return l, nil
}

// openTUN makes e's TUN device in e's namespace. It lives as long as the
// file is open.
func openTUN(e End) (*os.File, error) {
	var fd int
	err := e.NS.Do(func() error {
		var err error
		fd, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(e.Dev)
		if err != nil {
			unix.Close(fd)
			return err
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("TUNSETIFF %s: %w", e.Dev, err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("netns: link end in %s: %w", e.NS, err)
	}
	return os.NewFile(uintptr(fd), "tun "+e.Dev), nil
}

type packet struct {
	b   []byte
	due time.Time
}

// forward carries packets from src to dst (direction dir) until src is
// closed: the reader decides drops and due times, a writer waits them out.
func (l *Link) forward(dir int, src, dst *os.File) {
	defer l.wg.Done()
	c := &l.stats[dir]
	q := make(chan packet, QueueLimit)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTimer(time.Hour)
		defer t.Stop()
		for p := range q {
			if d := time.Until(p.due); d > 0 {
				t.Reset(d)
				<-t.C
			}
			if l.state.Load().partitioned {
				c.dropped.Add(1)
				c.droppedBytes.Add(int64(len(p.b)))
				continue
			}
			dst.Write(p.b) // fails only once the link is closed
		}
	}()
	defer wg.Wait()
	defer close(q)
	buf := make([]byte, 1<<16)
	var last time.Time
	for {
		n, err := src.Read(buf)
		if err != nil {
			return // closed
		}
		c.packets.Add(1)
		c.bytes.Add(int64(n))
		st := l.state.Load()
		if st.partitioned || st.imp.Loss > 0 && rand.Float64() < st.imp.Loss {
			c.dropped.Add(1)
			c.droppedBytes.Add(int64(n))
			continue
		}
		due := time.Now().Add(st.imp.Delay)
		if st.imp.Jitter > 0 {
			due = due.Add(rand.N(st.imp.Jitter))
		}
		if due.Before(last) {
			due = last
		}
		last = due
		select {
		case q <- packet{b: append([]byte(nil), buf[:n]...), due: due}:
		default:
			c.dropped.Add(1)
			c.droppedBytes.Add(int64(n))
		}
	}
}

// SetImpairment changes the link's delay, jitter and loss for the packets
// it reads from now on.
func (l *Link) SetImpairment(imp Impairment) error {
	if err := imp.validate(); err != nil {
		return fmt.Errorf("netns: %w", err)
	}
	for {
		old := l.state.Load()
		if l.state.CompareAndSwap(old, &linkState{imp: imp, partitioned: old.partitioned}) {
			return nil
		}
	}
}

// Impairment returns the link's current impairment.
func (l *Link) Impairment() Impairment { return l.state.Load().imp }

// Partition drops every packet in both directions, those already waiting
// out the delay included, until Heal. Connections are not closed: TCP
// retransmits, as across a real partition.
func (l *Link) Partition() { l.setPartitioned(true) }

// Heal ends a partition; the impairment set before stays.
func (l *Link) Heal() { l.setPartitioned(false) }

// Partitioned reports whether the link is partitioned.
func (l *Link) Partitioned() bool { return l.state.Load().partitioned }

func (l *Link) setPartitioned(p bool) {
	for {
		old := l.state.Load()
		if l.state.CompareAndSwap(old, &linkState{imp: old.imp, partitioned: p}) {
			l.log.Debug("link partition", slog.String("a", l.A.Dev), slog.Bool("partitioned", p))
			return
		}
	}
}

// Stats returns the link's counters.
func (l *Link) Stats() LinkStats {
	get := func(c *dirCounters) DirStats {
		return DirStats{Packets: c.packets.Load(), Bytes: c.bytes.Load(), Dropped: c.dropped.Load(), DroppedBytes: c.droppedBytes.Load()}
	}
	return LinkStats{AToB: get(&l.stats[0]), BToA: get(&l.stats[1])}
}

// close removes the devices (closing a TUN file removes its device) and
// waits for the forwarders.
func (l *Link) close() error {
	var errs []error
	l.once.Do(func() {
		for _, f := range l.files {
			if f != nil {
				errs = append(errs, f.Close())
			}
		}
		l.wg.Wait()
	})
	return errors.Join(errs...)
}
