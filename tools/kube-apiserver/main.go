// Command kube-apiserver is the upstream Kubernetes API server, built from the
// published k8s.io/kubernetes module so Fleetgate's tests can run against a real
// server. Nothing here changes its behaviour: main only hands over to upstream.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
