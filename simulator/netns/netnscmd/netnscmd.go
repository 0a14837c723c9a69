// Package netnscmd adds scenario commands for an emulated link
// (simulator/netns) to the simulator's scripts, through
// simulator.Config.Commands:
//
//	link delay=25ms [jitter=5ms] [loss=1%]   set the link's impairment
//	link partition                          drop every packet both ways
//	link heal                               end the partition
//	link stats                              packets and bytes so far
//
// The commands act on the link only; the fleet crosses it when the Sim
// runs in a WAN's namespaces (simulator.Config.CloudNamespace = WAN.Cloud,
// NodeNamespace = WAN.Edges, HubHost = WAN.HubHost()).
package netnscmd

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tether-edge/tether/simulator"
	"github.com/tether-edge/tether/simulator/netns"
)

// Commands returns the link commands for l, to merge into
// simulator.Config.Commands.
func Commands(l *netns.Link) map[string]simulator.Command {
	return map[string]simulator.Command{
		"link": func(_ context.Context, _ *simulator.Sim, args []simulator.Arg) (string, error) {
			return Run(l, args)
		},
	}
}

// Run carries out one link command.
func Run(l *netns.Link, args []simulator.Arg) (string, error) {
	if len(args) == 0 {
		return "", errors.New("link: want delay=, partition, heal or stats")
	}
	switch args[0].Key {
	case "partition", "heal", "stats":
		if len(args) > 1 || len(args[0].Vals) > 0 {
			return "", fmt.Errorf("link %s: takes no arguments", args[0].Key)
		}
		switch args[0].Key {
		case "partition":
			l.Partition()
			return "link partitioned", nil
		case "heal":
			l.Heal()
			return "link healed", nil
		}
		st := l.Stats()
		return fmt.Sprintf("a to b: %d packets %d bytes %d dropped; b to a: %d packets %d bytes %d dropped",
			st.AToB.Packets, st.AToB.Bytes, st.AToB.Dropped, st.BToA.Packets, st.BToA.Bytes, st.BToA.Dropped), nil
	}
	// Parse everything before changing anything.
	var (
		delay, jitter *time.Duration
		loss          *float64
	)
	for _, a := range args {
		if len(a.Vals) != 1 {
			return "", fmt.Errorf("link: %s: want %s=value", a.Key, a.Key)
		}
		v := a.Vals[0]
		switch a.Key {
		case "delay", "jitter":
			d, err := time.ParseDuration(v)
			if err != nil {
				return "", fmt.Errorf("link: %s=%s: %w", a.Key, v, err)
			}
			if a.Key == "delay" {
				delay = &d
			} else {
				jitter = &d
			}
		case "loss":
			f, err := parseShare(v)
			if err != nil {
				return "", fmt.Errorf("link: loss=%s: %w", v, err)
			}
			loss = &f
		default:
			return "", fmt.Errorf("link: unknown argument %q (delay, jitter, loss, or partition, heal, stats alone)", a.Key)
		}
	}
	imp := l.Impairment()
	if delay != nil {
		imp.Delay = *delay
	}
	if jitter != nil {
		imp.Jitter = *jitter
	}
	if loss != nil {
		imp.Loss = *loss
	}
	if err := l.SetImpairment(imp); err != nil {
		return "", fmt.Errorf("link: %w", err)
	}
	return fmt.Sprintf("link delay %s jitter %s loss %g%%", imp.Delay, imp.Jitter, 100*imp.Loss), nil
}

// parseShare reads "1%" or "0.01".
func parseShare(s string) (float64, error) {
	if p, ok := strings.CutSuffix(s, "%"); ok {
		v, err := strconv.ParseFloat(p, 64)
		return v / 100, err
	}
	return strconv.ParseFloat(s, 64)
}
