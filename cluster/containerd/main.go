// Command containerd is the one-node cluster's container runtime for the test rig: containerd and
// ctr (to import the images the tests build) in one binary, built from containerd's published
// module at the version go.mod pins (see ../build.sh); its runc shim is ./shim. A module of its
// own: containerd needs newer gRPC and OpenTelemetry modules than Kubernetes pins, which would
// change the kube binary's build.
//
// Usage: containerd [flags...] (the daemon), containerd ctr [...], or a link named ctr.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	_ "github.com/containerd/containerd/v2/cmd/containerd/builtins"
	"github.com/containerd/containerd/v2/cmd/containerd/command"
	ctr "github.com/containerd/containerd/v2/cmd/ctr/app"
)

func main() {
	args := os.Args
	if len(args) > 1 && args[1] == "ctr" {
		args = args[1:]
	}
	if filepath.Base(args[0]) == "ctr" {
		if err := ctr.New().Run(args); err != nil {
			fmt.Fprintf(os.Stderr, "ctr: %s\n", err)
			os.Exit(1)
		}
		return
	}
	if err := command.App().Run(args); err != nil {
		fmt.Fprintf(os.Stderr, "containerd: %s\n", err)
		os.Exit(1)
	}
}
