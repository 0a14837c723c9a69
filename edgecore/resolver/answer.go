package resolver

import (
	"net/netip"
	"strings"

	"golang.org/x/net/dns/dnsmessage"
)

// Sizes of answers over UDP: 512 bytes without EDNS (RFC 1035), at most
// maxUDPAnswer with it (the DNS flag day 2020 value, which avoids IP
// fragmentation).
const (
	minUDPAnswer = 512
	maxUDPAnswer = 1232
)

// verdict is what to do with one query.
type verdict int

const (
	drop    verdict = iota // malformed beyond an answer: say nothing
	reply                  // resp is the answer
	forward                // not a cluster name: ask upstream
)

// maxTCPAnswer is the largest answer over TCP (its length prefix is 16 bits).
const maxTCPAnswer = 65535

// answer decides the reply to the query q from t, for the cluster domain
// (lower case, with a trailing dot), over TCP or UDP. It is pure: no IO, no
// clock.
func answer(t *table, domain string, q []byte, tcp bool) (verdict, []byte) {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil {
		return drop, nil
	}
	if h.Response {
		return drop, nil // never answer an answer (reflection loops)
	}
	qs, err := p.AllQuestions()
	if err != nil {
		return reply, errorReply(h, nil, dnsmessage.RCodeFormatError)
	}
	if h.OpCode != 0 {
		return reply, errorReply(h, qs, dnsmessage.RCodeNotImplemented)
	}
	if len(qs) != 1 {
		return reply, errorReply(h, qs, dnsmessage.RCodeFormatError)
	}
	question := qs[0]
	size := minUDPAnswer
	if err := p.SkipAllAnswers(); err == nil {
		if err := p.SkipAllAuthorities(); err == nil {
			for {
				rh, err := p.AdditionalHeader()
				if err != nil {
					break
				}
				if rh.Type == dnsmessage.TypeOPT {
					size = min(max(int(rh.Class), minUDPAnswer), maxUDPAnswer)
				}
				if err := p.SkipAdditional(); err != nil {
					break
				}
			}
		}
	}
	if tcp {
		size = maxTCPAnswer
	}
	name := strings.ToLower(question.Name.String())
	if name != domain && !strings.HasSuffix(name, "."+domain) {
		return forward, nil
	}
	rcode, answers, extra := lookup(t, domain, strings.TrimSuffix(strings.TrimSuffix(name, domain), "."), question)
	return reply, build(h, question, rcode, answers, extra, size)
}

// lookup answers a question for rel, the name less the cluster domain.
func lookup(t *table, domain, rel string, q dnsmessage.Question) (dnsmessage.RCode, []dnsmessage.Resource, []dnsmessage.Resource) {
	labels := strings.Split(rel, ".")
	switch {
	case len(labels) == 3 && labels[2] == "svc":
		s := t.services[labels[0]+"."+labels[1]]
		if s == nil {
			return dnsmessage.RCodeNameError, nil, nil
		}
		return dnsmessage.RCodeSuccess, addrRecords(q.Name, q.Type, s), nil
	case len(labels) == 5 && labels[4] == "svc" && strings.HasPrefix(labels[0], "_") && strings.HasPrefix(labels[1], "_"):
		s := t.services[labels[2]+"."+labels[3]]
		if s == nil {
			return dnsmessage.RCodeNameError, nil, nil
		}
		var ans, extra []dnsmessage.Resource
		found := false
		target := dnsmessage.MustNewName(labels[2] + "." + labels[3] + ".svc." + domain)
		for _, p := range s.ports {
			if "_"+p.name != labels[0] || "_"+p.proto != labels[1] {
				continue
			}
			found = true
			if q.Type == dnsmessage.TypeSRV || q.Type == dnsmessage.TypeALL {
				ans = append(ans, dnsmessage.Resource{Header: hdr(q.Name, dnsmessage.TypeSRV),
					Body: &dnsmessage.SRVResource{Priority: 0, Weight: 100, Port: p.port, Target: target}})
			}
		}
		if !found {
			return dnsmessage.RCodeNameError, nil, nil
		}
		if len(ans) > 0 {
			extra = addrRecords(target, dnsmessage.TypeA, s)
		}
		return dnsmessage.RCodeSuccess, ans, extra
	case rel == "" || rel == "svc" || (len(labels) == 2 && labels[1] == "svc"):
		// The domain, svc and the namespaces exist, with no records.
		return dnsmessage.RCodeSuccess, nil, nil
	}
	return dnsmessage.RCodeNameError, nil, nil
}

// ttl of the answers from the store, in seconds: short, so that a change
// of endpoints is seen soon.
const ttl = 5

func hdr(name dnsmessage.Name, typ dnsmessage.Type) dnsmessage.ResourceHeader {
	return dnsmessage.ResourceHeader{Name: name, Type: typ, Class: dnsmessage.ClassINET, TTL: ttl}
}

// addrRecords returns the records of s answering typ for name: A or AAAA
// (ANY: both), or a CNAME for an ExternalName Service.
func addrRecords(name dnsmessage.Name, typ dnsmessage.Type, s *service) []dnsmessage.Resource {
	if s.external != "" {
		n, err := dnsmessage.NewName(s.external)
		if err != nil {
			return nil
		}
		return []dnsmessage.Resource{{Header: hdr(name, dnsmessage.TypeCNAME), Body: &dnsmessage.CNAMEResource{CNAME: n}}}
	}
	var out []dnsmessage.Resource
	for _, a := range s.addrs {
		switch {
		case a.Is4() && (typ == dnsmessage.TypeA || typ == dnsmessage.TypeALL):
			out = append(out, dnsmessage.Resource{Header: hdr(name, dnsmessage.TypeA), Body: &dnsmessage.AResource{A: a.As4()}})
		case a.Is6() && !a.Is4In6() && (typ == dnsmessage.TypeAAAA || typ == dnsmessage.TypeALL):
			out = append(out, dnsmessage.Resource{Header: hdr(name, dnsmessage.TypeAAAA), Body: &dnsmessage.AAAAResource{AAAA: a.As16()}})
		}
	}
	return out
}

// build encodes the reply, with as many answers as fit in size bytes; if
// not all do, the reply is marked truncated (the client may ask again over
// TCP).
func build(q dnsmessage.Header, question dnsmessage.Question, rcode dnsmessage.RCode, answers, extra []dnsmessage.Resource, size int) []byte {
	h := dnsmessage.Header{ID: q.ID, Response: true, Authoritative: true, RecursionDesired: q.RecursionDesired,
		RecursionAvailable: true, RCode: rcode}
	for _, ex := range [][]dnsmessage.Resource{extra, nil} { // the additional records go first
		if b, err := encode(h, question, answers, ex); err == nil && len(b) <= size {
			return b
		}
	}
	h.Truncated = true
	for n := len(answers) - 1; n > 0; n-- {
		if b, err := encode(h, question, answers[:n], nil); err == nil && len(b) <= size {
			return b
		}
	}
	b, _ := encode(h, question, nil, nil)
	return b
}

func encode(h dnsmessage.Header, q dnsmessage.Question, answers, extra []dnsmessage.Resource) ([]byte, error) {
	m := dnsmessage.Message{Header: h, Questions: []dnsmessage.Question{q}, Answers: answers, Additionals: extra}
	return m.Pack()
}

// errorReply answers with rcode and the questions as asked (if any parsed).
func errorReply(q dnsmessage.Header, qs []dnsmessage.Question, rcode dnsmessage.RCode) []byte {
	m := dnsmessage.Message{Header: dnsmessage.Header{ID: q.ID, Response: true, OpCode: q.OpCode,
		RecursionDesired: q.RecursionDesired, RCode: rcode}, Questions: qs}
	b, err := m.Pack()
	if err != nil {
		m.Questions = nil
		b, _ = m.Pack()
	}
	return b
}

// isIn reports whether a is in one of ps.
func isIn(a netip.Addr, ps []netip.Prefix) bool {
	a = a.Unmap()
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
