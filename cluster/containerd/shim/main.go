// Command containerd-shim-runc-v2 is the one-node cluster's runc shim, built from containerd's
// published module (see ../main.go). A binary of its own: the shim initialises every plugin
// registered in its process, so it cannot share a binary with containerd's daemon plugins.
package main

import (
	"context"

	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/manager"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/task/plugin"
	"github.com/containerd/containerd/v2/pkg/shim"
)

func main() {
	shim.RunShim(context.Background(), manager.NewShimManager("io.containerd.runc.v2"))
}
