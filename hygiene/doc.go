// Package hygiene holds tests that keep the code base in shape: every
// package has a doc comment, and the dependency rules between Tether's parts
// hold (the edge never imports the cloud, the protocol imports nothing of
// Tether's). It has no code of its own.
package hygiene
