package netnscmd

import (
	"strings"
	"testing"

	"github.com/tether-edge/tether/simulator"
)

func TestParseShare(t *testing.T) {
	for in, want := range map[string]float64{"1%": 0.01, "0.25": 0.25, "100%": 1, "0": 0} {
		got, err := parseShare(in)
		if err != nil || got != want {
			t.Errorf("parseShare(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := parseShare("x%"); err == nil {
		t.Error("x% parsed")
	}
}

// Bad arguments are refused before the link is touched (here: none).
func TestBadArguments(t *testing.T) {
	for _, tc := range []struct {
		args []simulator.Arg
		want string
	}{
		{nil, "want delay="},
		{[]simulator.Arg{{Key: "delay", Vals: []string{"soon"}}}, "delay=soon"},
		{[]simulator.Arg{{Key: "loss", Vals: []string{"lots"}}}, "loss=lots"},
		{[]simulator.Arg{{Key: "delay"}}, "want delay=value"},
		{[]simulator.Arg{{Key: "speed", Vals: []string{"1"}}}, `unknown argument "speed"`},
		{[]simulator.Arg{{Key: "heal"}, {Key: "delay", Vals: []string{"1ms"}}}, "takes no arguments"},
	} {
		_, err := Run(nil, tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an error with %q", tc.args, err, tc.want)
		}
	}
}
