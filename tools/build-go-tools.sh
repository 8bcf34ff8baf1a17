#!/usr/bin/env bash
# Builds the test-only Go binaries into .tools/bin (called by `make setup`):
#   kube   - kube-apiserver and kube-controller-manager (tools/kube, k8s.io/kubernetes) and etcd
#            (tools/etcd, go.etcd.io/etcd/server/v3)
#   istio  - pilot-discovery (istiod), pilot-agent and Istio's echo server/client (tools/istio),
#            plus Istio's data files into .tools/share/istio/: the CRD manifest and the sidecar's
#            Envoy bootstrap template (pilot-agent renders it; the mesh tests point at it)
# Each set carries a stamp of its module files: a second run builds nothing.
# KUBEBUILDER_ASSETS (a directory with kube-apiserver and etcd) replaces the kube set.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.tools/bin
SHARE=.tools/share
mkdir -p "$BIN" "$SHARE"

say() { printf 'setup: %s\n' "$*"; }

stamp_of() { # sets...: their module files and this script decide the binaries
    local set
    for set in "$@"; do cat "tools/$set/go.mod" "tools/$set/go.sum"; done |
        cat - tools/build-go-tools.sh | sha256sum | cut -c1-16
}

fresh() { # stamp name, its sets (comma-separated), binaries...
    local name=$1 sets=$2
    shift 2
    [ -f "$BIN/.$name.stamp" ] && [ "$(cat "$BIN/.$name.stamp")" = "$(stamp_of ${sets//,/ })" ] || return 1
    for b in "$@"; do [ -x "$BIN/$b" ] || return 1; done
}

if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ] && [ -x "$KUBEBUILDER_ASSETS/etcd" ]; then
    say "using kube-apiserver and etcd of KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS (nothing built)"
    SKIP_KUBE=1
fi

if ! command -v go >/dev/null 2>&1; then
    say "Go not found: the real kube-apiserver, etcd and istiod are not built, and the tests use the Kubernetes API emulator; install Go >= 1.26 (your distribution's golang package or the official tarball) and run make setup again, or set KUBEBUILDER_ASSETS"
    exit 0
fi

export GOFLAGS="${GOFLAGS:-} -trimpath"
K8S_VERSION=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' tools/kube/go.mod)
K8S_MINOR=$(echo "$K8S_VERSION" | cut -d. -f2)
KUBE_LDFLAGS="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$K8S_MINOR -X k8s.io/component-base/version.gitTreeState=clean"

build() { # set, what, go build args...
    local set=$1 what=$2
    shift 2
    local started=$SECONDS
    say "building $what (first time on 2 cores: minutes; later runs reuse the Go build cache)"
    (cd "tools/$set" && go build "$@")
    say "built $what in $((SECONDS - started)) s"
}

if [ -z "${SKIP_KUBE:-}" ]; then
    if fresh kube kube,etcd kube-apiserver kube-controller-manager etcd; then
        say "kube-apiserver, kube-controller-manager and etcd are up to date ($K8S_VERSION)"
    else
        build kube "kube-apiserver and kube-controller-manager $K8S_VERSION" \
            -ldflags "$KUBE_LDFLAGS" -o "../../$BIN/" \
            k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
        build etcd "etcd $(awk '$1 == "require" {print $3}' tools/etcd/go.mod)" \
            -ldflags "-s -w" -o "../../$BIN/etcd" go.etcd.io/etcd/server/v3
        stamp_of kube etcd >"$BIN/.kube.stamp"
    fi
fi

ISTIO_BINS=(pilot-discovery pilot-agent echo-server echo-client)
# Istio's data files the tests use, as paths in the istio.io/istio module (copied flat).
ISTIO_DATA=(manifests/charts/base/files/crd-all.gen.yaml tools/packaging/common/envoy_bootstrap.json)
istio_data_present() {
    local f
    for f in "${ISTIO_DATA[@]}"; do [ -f "$SHARE/istio/$(basename "$f")" ] || return 1; done
}
if fresh istio istio "${ISTIO_BINS[@]}" && istio_data_present; then
    say "istiod (pilot-discovery), pilot-agent and the echo app are up to date"
else
    mkdir -p "$BIN/istio.tmp"
    build istio "istiod (pilot-discovery), pilot-agent and Istio's echo app" \
        -ldflags "-s -w" -o "../../$BIN/istio.tmp/" \
        istio.io/istio/pilot/cmd/pilot-discovery istio.io/istio/pilot/cmd/pilot-agent \
        istio.io/istio/pkg/test/echo/cmd/server istio.io/istio/pkg/test/echo/cmd/client
    mv "$BIN/istio.tmp/pilot-discovery" "$BIN/istio.tmp/pilot-agent" "$BIN/"
    mv "$BIN/istio.tmp/server" "$BIN/echo-server"
    mv "$BIN/istio.tmp/client" "$BIN/echo-client"
    rmdir "$BIN/istio.tmp"
    dir=$(cd tools/istio && go list -m -f '{{.Dir}}' istio.io/istio)
    mkdir -p "$SHARE/istio"
    for f in "${ISTIO_DATA[@]}"; do install -m 0644 "$dir/$f" "$SHARE/istio/$(basename "$f")"; done
    stamp_of istio >"$BIN/.istio.stamp"
fi
