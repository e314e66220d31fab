#!/bin/sh
# Build the go-cache reference node to bin/go-cache. Idempotent and quick when nothing changed
# (go build's cache). Needs Go 1.26+ and the Go module proxy; go.sum pins every module.
set -eu
cd "$(dirname "$0")"
if ! command -v go >/dev/null 2>&1; then
	echo "build.sh: go not found on PATH (Go 1.26 or newer is needed)" >&2
	exit 1
fi
# -buildvcs=false: no git needed (a repo owned by another user makes VCS stamping fail)
GOFLAGS="${GOFLAGS:-} -mod=mod -buildvcs=false" go build -o bin/go-cache .
