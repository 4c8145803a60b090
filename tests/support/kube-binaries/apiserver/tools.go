//go:build tools

// Package apiserver pins Kubernetes' API server for `go build k8s.io/kubernetes/cmd/kube-apiserver`
// (scripts/kube.sh): k8s.io/kubernetes at one release, its staging modules at the same
// release (the replace lines, since its own go.mod points them at its source tree).
package apiserver

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
