// Command tether-image writes a container image holding one static binary
// per platform, as an OCI image layout in a tar file, with no registry and
// no container daemon (package ociimage). `make image` writes cloudcore's:
//
//	tether-image --name tether.local/cloudcore:v1 --out dist/cloudcore-image.tar \
//	    --path /cloudcore --user 65532:65532 \
//	    linux/amd64=dist/cloudcore-linux-amd64 linux/arm64=dist/cloudcore-linux-arm64
//
// Import it on a node with `ctr -n k8s.io images import dist/cloudcore-image.tar`
// (the node's platform) or with --all-platforms.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/tether-edge/tether/ociimage"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "tether-image:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fl := flag.NewFlagSet("tether-image", flag.ContinueOnError)
	var (
		name = fl.String("name", "", "the image's reference, e.g. tether.local/cloudcore:v1 (required)")
		out  = fl.String("out", "", "the tar file to write (required)")
		dst  = fl.String("path", "", "where the binary goes in the image, e.g. /cloudcore (required); it is the entrypoint")
		user = fl.String("user", "65532:65532", "the user:group the image runs as")
	)
	fl.Usage = func() {
		fmt.Fprintln(fl.Output(), "usage: tether-image --name REF --out FILE --path /BIN [--user U:G] linux/ARCH[/VARIANT]=BINARY...")
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *name == "" || *out == "" || *dst == "" || fl.NArg() == 0 {
		fl.Usage()
		return errors.New("--name, --out, --path and at least one platform=binary are required")
	}
	if !strings.Contains(*name, ":") || !strings.HasPrefix(*dst, "/") {
		return fmt.Errorf("--name %q needs a tag and --path %q must be absolute", *name, *dst)
	}
	var images []ociimage.Image
	for _, a := range fl.Args() {
		plat, bin, ok := strings.Cut(a, "=")
		parts := strings.Split(plat, "/")
		if !ok || len(parts) < 2 || len(parts) > 3 || parts[0] != "linux" || parts[1] == "" {
			return fmt.Errorf("%q: want linux/ARCH[/VARIANT]=BINARY", a)
		}
		data, err := os.ReadFile(bin)
		if err != nil {
			return err
		}
		img := ociimage.Image{Arch: parts[1],
			Files: []ociimage.File{
				{Path: *dst, Mode: 0o755, Data: data},
				// A writable scratch directory for libraries that want one;
				// the manifests mount the root read-only.
				{Path: "tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
			},
			Config: ociimage.Config{Entrypoint: []string{*dst}, User: *user}}
		if len(parts) == 3 {
			img.Variant = parts[2]
		}
		images = append(images, img)
	}
	f, err := os.CreateTemp(filepath.Dir(*out), ".tether-image-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := ociimage.Write(f, *name, images); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), *out)
}
