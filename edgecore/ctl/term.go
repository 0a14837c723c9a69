package ctl

import "golang.org/x/term"

// makeRaw puts the terminal fd in raw mode, if it is one.
func makeRaw(fd int) (func(), bool) {
	if !term.IsTerminal(fd) {
		return nil, false
	}
	st, err := term.MakeRaw(fd)
	if err != nil {
		return nil, false
	}
	return func() { term.Restore(fd, st) }, true
}
