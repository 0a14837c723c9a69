package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteText writes r as short text tables: the machine, one row per scale,
// the single figures, and the targets.
func WriteText(w io.Writer, r *Report) error {
	var b strings.Builder
	m := r.Machine
	commit := m.GitCommit
	if len(commit) > 12 {
		commit = commit[:12]
	}
	if m.GitDirty {
		commit += " (dirty)"
	}
	fmt.Fprintf(&b, "Tether bench, %s (%s)\n", r.Started.Format("2006-01-02 15:04 MST"),
		r.Finished.Sub(r.Started).Round(time.Second))
	parts := []string{"commit " + orDash(commit), fmt.Sprintf("%d cores", m.Cores)}
	for _, p := range []string{m.CPUModel, mib(m.MemoryBytes), m.GoVersion, m.OS + "/" + m.Arch} {
		if p != "" && p != "-" && p != "/" {
			parts = append(parts, p)
		}
	}
	b.WriteString(strings.Join(parts, ", ") + "\n")
	if r.Link != nil {
		fmt.Fprintf(&b, "hollow nodes behind an emulated link: %g ms each way, %g%% loss\n", r.Link.DelayMs, r.Link.LossPercent)
	} else {
		b.WriteString("hollow nodes on loopback\n")
	}
	b.WriteString("\n")

	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "nodes\tenrolled\tconnected\tconnect\tcloudcore RSS idle\tper node\tCPU idle\tRSS churn\tCPU churn\t")
	for _, s := range r.Scales {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			s.Nodes, enrolled(s), s.Connected, secs(s.ConnectSeconds),
			usageRSS(s.CloudcoreIdle), perNodeRSS(s.CloudcoreIdle), usageCPU(s.CloudcoreIdle),
			usageRSS(s.CloudcoreChurn), usageCPU(s.CloudcoreChurn))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	b.WriteString("\n")
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	link := r.Link != nil
	hdr := "nodes\tdispatch p50 / p99\tcreate→Running p50 / p99\tstorm\tstorm sent\tidle up / down per node (TLS)\t"
	if link {
		hdr += "storm sent (IP)\tidle up / down per node (IP)\t"
	}
	fmt.Fprintln(tw, hdr)
	for _, s := range r.Scales {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t",
			s.Nodes, latency(s.Dispatch), partial(latency(s.CreateToRunning), s.CreateToRunning, s.Churn),
			storm(s.Storm), stormBytes(s.Storm), bandwidth(s.IdleBandwidth))
		if link {
			sent := "-"
			if s.Storm != nil && s.Storm.LinkBytesSent > 0 {
				sent = bytesText(s.Storm.LinkBytesSent)
			}
			fmt.Fprintf(tw, "%s\t%s\t", sent, bandwidth(s.IdleLink))
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range r.Scales {
		if s.Processes > 1 {
			fmt.Fprintf(&b, "  %d nodes in %d simulator processes joined to one cloudcore; pods on the first one's nodes\n", s.Nodes, s.Processes)
		}
		if c := s.Churn; c != nil && c.DownBytesPerPod > 0 {
			fmt.Fprintf(&b, "  %d nodes: %.0f B down per pod created, to Running with its status writes\n", s.Nodes, c.DownBytesPerPod)
		}
		if c := s.Churn; c != nil && c.Error != "" {
			fmt.Fprintf(&b, "  %d nodes, churn of %d pods did not finish: %s\n", s.Nodes, c.Pods, c.Error)
		}
		for _, k := range sortedKeys(s.Unavailable) {
			fmt.Fprintf(&b, "  %d nodes, %s: %s\n", s.Nodes, k, s.Unavailable[k])
		}
	}
	b.WriteString("\n")

	if e := r.EdgecoreIdle; e != nil {
		fmt.Fprintf(&b, "edgecore binary RSS, one node idle (runtime %s): %.1f MB\n", e.Runtime, float64(e.RSSBytes)/1e6)
		if e.Link != nil {
			fmt.Fprintf(&b, "edgecore binary idle traffic behind an emulated link (%.0f ms each way), IP layer, %.0fs: up / down %s\n",
				e.LinkDelayMs, e.Link.Seconds, bandwidth(e.Link))
		}
	}
	if t := r.Twin; t != nil {
		fmt.Fprintf(&b, "twin updates: %.0f/s end to end, %.0f/s engine alone", t.UpdatesPerSecond, t.EngineUpdatesPerSecond)
		if t.DeviceToAPI != nil {
			fmt.Fprintf(&b, ", device→API lag p50/p99 %s", latency(t.DeviceToAPI))
		}
		fmt.Fprintf(&b, " (%s)\n", t.Source)
	}
	if d := r.DeviceLag; d != nil {
		fmt.Fprintf(&b, "device→API server lag, %d devices on the edgecore binary: all at once %s; steady %s\n",
			d.Devices, lagRound(d.Burst), lagRound(d.Steady))
		for _, l := range []*LagRound{d.Burst, d.Steady} {
			if l != nil && l.Error != "" {
				fmt.Fprintf(&b, "  device lag round of %d reports did not finish: %s\n", l.Reports, l.Error)
			}
		}
	}
	for _, k := range sortedKeys(r.Unavailable) {
		fmt.Fprintf(&b, "%s: %s\n", k, r.Unavailable[k])
	}
	if len(r.GoBenchmarks) > 0 {
		fmt.Fprintf(&b, "Go micro-benchmarks: %d (in report.json)\n", len(r.GoBenchmarks))
	}
	b.WriteString("\n")

	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "target\tlimit\tvalue\tstatus\tnote")
	for _, t := range r.Targets {
		v := "-"
		if t.Value != nil {
			v = fmt.Sprintf("%.4g %s", *t.Value, t.Unit)
			if t.Nodes > 0 {
				v += fmt.Sprintf(" @%d", t.Nodes)
			}
		}
		fmt.Fprintf(tw, "%s\t< %g %s\t%s\t%s\t%s\n", t.Description, t.Limit, t.Unit, v, t.Status, t.Note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, e := range r.Errors {
		fmt.Fprintf(&b, "error: %s\n", e)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func sortedKeys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func mib(b int64) string {
	switch {
	case b <= 0:
		return "-"
	case b >= 10<<30:
		return fmt.Sprintf("%.0f GiB", float64(b)/(1<<30))
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30))
	default:
		return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20))
	}
}

// enrolled is the nodes a scale enrolled and the time it took.
func enrolled(s Scale) string {
	if s.Enrolled == 0 {
		return "-"
	}
	return fmt.Sprintf("%d in %s", s.Enrolled, secs(s.EnrollSeconds))
}

func secs(s float64) string {
	if s <= 0 {
		return "-"
	}
	if s < 10 {
		return fmt.Sprintf("%.2fs", s)
	}
	return fmt.Sprintf("%.0fs", s)
}

func usageRSS(u *ProcessUsage) string {
	if u == nil {
		return "-"
	}
	return mib(u.RSSPeakBytes)
}

func perNodeRSS(u *ProcessUsage) string {
	if u == nil || u.Nodes == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f KiB", u.RSSPerNodeBytes/1024)
}

func usageCPU(u *ProcessUsage) string {
	if u == nil {
		return "-"
	}
	return fmt.Sprintf("%.2f cores", u.CPUCores)
}

func latency(l *Latency) string {
	if l == nil {
		return "-"
	}
	return fmt.Sprintf("%s / %s", ms(l.P50Ms), ms(l.P99Ms))
}

// lagRound is a LagRound's rate and p50 / p90 / p99 / max, with the
// share of reports that arrived when some did not.
func lagRound(l *LagRound) string {
	if l == nil {
		return "-"
	}
	out := ""
	if l.PerSecond > 0 {
		out = fmt.Sprintf("%.0f/s ", l.PerSecond)
	}
	if l.Samples == 0 {
		return out + "no report arrived"
	}
	out += fmt.Sprintf("p50/p90/p99/max %s / %s / %s / %s", ms(l.P50Ms), ms(l.P90Ms), ms(l.P99Ms), ms(l.MaxMs))
	if l.Samples < l.Reports {
		out += fmt.Sprintf(" (%d of %d)", l.Samples, l.Reports)
	}
	return out
}

// partial marks a latency over fewer pods than the churn created.
func partial(text string, l *Latency, c *Churn) string {
	if l != nil && c != nil && l.Samples < c.Pods {
		return fmt.Sprintf("%s (%d of %d)", text, l.Samples, c.Pods)
	}
	return text
}

func ms(v float64) string {
	switch {
	case v >= 10000:
		return fmt.Sprintf("%.0fs", v/1000)
	case v >= 1000:
		return fmt.Sprintf("%.2fs", v/1000)
	case v >= 10:
		return fmt.Sprintf("%.0fms", v)
	default:
		return fmt.Sprintf("%.1fms", v)
	}
}

func storm(s *Storm) string {
	if s == nil {
		return "-"
	}
	out := secs(s.Seconds)
	if s.Resynced < s.Nodes {
		out += fmt.Sprintf(" (%d/%d)", s.Resynced, s.Nodes)
	}
	return out
}

func stormBytes(s *Storm) string {
	if s == nil {
		return "-"
	}
	return bytesText(s.BytesSent)
}

func bytesText(n int64) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.0f KiB", float64(n)/1024)
}

func bandwidth(b *Bandwidth) string {
	if b == nil {
		return "-"
	}
	return fmt.Sprintf("%.3f / %.3f kbit/s", b.UplinkBitsPerSecond/1000, b.DownlinkBitsPerSecond/1000)
}
