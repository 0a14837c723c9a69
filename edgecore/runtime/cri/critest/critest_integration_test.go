//go:build integration

package critest

import (
	"os"
	"testing"
)

func TestStartStop(t *testing.T) {
	c, err := Start(t.Context(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.Dir); !os.IsNotExist(err) {
		t.Errorf("%s left behind: %v", c.Dir, err)
	}
}
