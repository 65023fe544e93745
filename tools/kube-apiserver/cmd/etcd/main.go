// Command etcd is the upstream etcd server at the exact version that the pinned
// k8s.io/kubernetes release depends on, so the API server's storage backend matches it.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
