// Command pause is the one-node cluster's sandbox ("pause") container: PID 1 of each pod's
// sandbox, holding its namespaces. It waits for SIGINT or SIGTERM and reaps orphaned children
// (with a shared process namespace they are reparented to it). Written for the test rig; the
// image is built FROM scratch with buildah, as no registry is reachable.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
