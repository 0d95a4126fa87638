// The pod sandbox ("pause") process for the real-node mode: no image can be pulled here, so
// containerd's sandbox_image is built from this. It holds the pod's namespaces open: block until
// SIGINT/SIGTERM, and reap any child that gets re-parented to it (it is PID 1 when the pod
// shares its process namespace).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s == syscall.SIGCHLD {
			for {
				pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
			continue
		}
		os.Exit(0)
	}
}
