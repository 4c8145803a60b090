// Command etcd is etcd's own server (go.etcd.io/etcd/server/v3's etcdmain), built from its Go
// module by scripts/kube.sh for the Kubernetes API server the tests start.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
