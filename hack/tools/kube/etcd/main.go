// Command etcd is the etcd server, built from a pinned module version for
// the local test control plane (see hack/setup-kube.sh).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
