#!/usr/bin/env bash
# Builds the sandbox's real components from the pinned Go modules in testbed/*/ into .tools/bin/: the control plane
# (kine, kube-apiserver, kube-controller-manager, kube-scheduler), the External Secrets Operator's controller, with
# ESO's upstream CRDs (external-secrets-crds.yaml, from the same module) beside it, and versitygw, the S3 server that
# the tests and benchmarks store snapshots in.
#
# A cold build takes about ten minutes on two cores, so finished binaries are kept in a cache outside the clone
# (${DR_TESTBED_CACHE:-~/.cache/dr-testbed}/<key>/), keyed on go.mod, go.sum, the build flags and the Go version: a
# fresh clone on a machine that built the same pins before copies them in a second. Changing any flag misses Go's
# own build cache too (a full rebuild), so the flags live here, once.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v go >/dev/null; then
	echo "testbed: no Go toolchain on PATH; the sandbox's control plane is built from Go modules." >&2
	echo "testbed: install Go >= 1.26 (https://go.dev/dl/ or apt-get install golang) and run: make testbed" >&2
	exit 2
fi

K8S_VERSION=v1.37.2
K8S_LDFLAGS="-s -w -X k8s.io/component-base/version.gitVersion=${K8S_VERSION} \
-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 \
-X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/component-base/version.buildDate=2026-01-01T00:00:00Z"
KINE_LDFLAGS="-s -w -X github.com/k3s-io/kine/pkg/version.Version=v0.17.5"
CACHE=${DR_TESTBED_CACHE:-${HOME}/.cache/dr-testbed}
OUT=.tools/bin
mkdir -p "$OUT"

# build MODULE_DIR LDFLAGS PACKAGE... [-- MODULE:PATH=NAME...]: the packages, and files copied out of their modules
build() {
	local dir=$1 ldflags=$2
	shift 2
	local packages=() extras=()
	while [ $# -gt 0 ] && [ "$1" != -- ]; do packages+=("$1"); shift; done
	[ $# -gt 0 ] && shift && extras=("$@")
	set -- "${packages[@]}"
	local key
	key=$( (cat "$dir/go.mod" "$dir/go.sum"; echo "$ldflags" "$*" "${extras[*]}"; go env GOVERSION GOOS GOARCH CGO_ENABLED) |
		sha256sum | cut -c1-16)
	local cached=$CACHE/$(basename "$dir")-$key
	if [ ! -f "$cached/.complete" ]; then
		echo "testbed: building $* (pins changed or first build; about 10 min cold on 2 cores, seconds warm)"
		local start=$SECONDS tmp
		tmp=$(mktemp -d "$CACHE.tmp.XXXXXX" 2>/dev/null || { mkdir -p "$(dirname "$CACHE")"; mktemp -d "$CACHE.tmp.XXXXXX"; })
		(cd "$dir" && go build -mod=readonly -ldflags "$ldflags" -o "$tmp/" "$@") || {
			rm -rf "$tmp"
			echo "testbed: the build failed (output above); rerun with: make testbed" >&2
			exit 2
		}
		local extra module rest
		for extra in "${extras[@]}"; do # MODULE:PATH=NAME
			module=${extra%%:*} rest=${extra#*:}
			module=$(cd "$dir" && go list -m -f '{{.Dir}}' "$module") && cp "$module/${rest%=*}" "$tmp/${rest#*=}" || {
				rm -rf "$tmp"
				echo "testbed: ${rest%=*} is not in ${extra%%:*}; rerun with: make testbed" >&2
				exit 2
			}
		done
		touch "$tmp/.complete"
		mkdir -p "$CACHE"
		rm -rf "$cached"
		mv "$tmp" "$cached"
		echo "testbed: built $(basename "$dir") in $((SECONDS - start)) s"
	fi
	local f
	for f in "$cached"/*; do
		# A hard link where the cache is on the same file system; a copy where it is not.
		ln -f "$f" "$OUT/" 2>/dev/null || cp -f "$f" "$OUT/"
	done
}

build testbed/kine "$KINE_LDFLAGS" github.com/k3s-io/kine
build testbed/kubernetes "$K8S_LDFLAGS" \
	k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler
build testbed/eso "-s -w" github.com/external-secrets/external-secrets \
	-- github.com/external-secrets/external-secrets:deploy/crds/bundle.yaml=external-secrets-crds.yaml
build testbed/versitygw "-s -w -X main.Version=v1.8.0" github.com/versity/versitygw/cmd/versitygw
