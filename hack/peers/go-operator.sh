#!/usr/bin/env bash
# Build uplion's original Go operator (the AIModel operator this project re-implements) into
# .peers/bin/aimodel-operator-go, for the benchmarks that run it side by side with ours
# (hack/peers/go_operator.py). Nothing here is part of the repository or of `make test`.
#
#   GO_OPERATOR_SRC  the Go source (default .peers/src/ai-model-operator)
#   FORCE=1          rebuild even when the binary matches the source
#
# A missing source is not an error: this prints how to get it and exits 0.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
src=${GO_OPERATOR_SRC:-.peers/src/ai-model-operator}
bin=.peers/bin/aimodel-operator-go
stamp=$bin.rev
upstream=https://github.com/uplion/ai-model-operator

say() { echo "[peers] go-operator: $*"; }

if [ ! -f "$src/go.mod" ] || [ ! -f "$src/cmd/main.go" ]; then
  say "no source in $src; skipped. To build it:"
  if [ -n "${GO_OPERATOR_SRC:-}" ]; then
    say "  git clone $upstream $src && GO_OPERATOR_SRC=$src make peers"
  else
    say "  git clone $upstream $src && make peers"
  fi
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  say "Go is not on PATH; skipped (the Go original needs Go 1.20 or newer to build)"
  exit 0
fi

# What the binary would be built from: HEAD's commit, plus any local changes to the source.
rev=unknown
if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
  rev=$(git -C "$src" rev-parse HEAD)
  if [ -n "$(git -C "$src" status --porcelain --untracked-files=no)" ]; then
    rev="$rev-dirty"
  fi
fi
if [ -z "${FORCE:-}" ] && [ -x "$bin" ]; then
  if [ "$rev" = "$(cat "$stamp" 2>/dev/null)" ] && [[ "$rev" != *-dirty ]] \
    && [ "$(stat -c %Y "$bin")" -ge "$(git -C "$src" log -1 --format=%ct HEAD)" ]; then
    say "$bin is built from $src at ${rev:0:12}; up to date (FORCE=1 rebuilds)"
    exit 0
  fi
  # Local changes (or no git): up to date when built from the same commit with local changes
  # and no Go file, go.mod or go.sum is newer than the binary.
  if [[ "$rev" = unknown || "$rev" = *-dirty ]] && [ "$rev" = "$(cat "$stamp" 2>/dev/null)" ] \
    && [ -z "$(find "$src" \( -name '*.go' -o -name go.mod -o -name go.sum \) -newer "$bin" -print -quit)" ]; then
    say "$bin is newer than the sources in $src; up to date (FORCE=1 rebuilds)"
    exit 0
  fi
fi

# Modules come from the Go module proxy only; the checksum database is not reachable here,
# so checksums are taken from go.sum and the proxy as they are (like hack/devcluster/gobuild.py).
export GOSUMDB=off GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0 GOTOOLCHAIN=${GOTOOLCHAIN:-local}

mkdir -p "$(dirname "$bin")"
short=${rev:0:12}
[[ "$rev" = *-dirty ]] && short+=-dirty
say "building $src ($short) with $(go version | cut -d' ' -f3) into $bin"
start=$SECONDS
say "downloading modules"
(cd "$src" && go mod download) 2>&1 | sed "s/^/[peers] go-operator:   /" || { say "go mod download failed in $src"; exit 1; }
# -v prints each package as it is compiled: a progress line every 50 of them; the whole output
# goes to $bin.build.log, whose end is shown if the build fails.
tmp=$bin.tmp
buildlog=$bin.build.log
rm -f "$tmp"
if ! (cd "$src" && go build -v -trimpath -ldflags="-s -w" -o "$repo/$tmp" ./cmd 2>&1) | tee "$buildlog" \
  | while IFS= read -r _; do
      n=$((${n:-0} + 1))
      if [ $((n % 50)) -eq 0 ]; then say "$n packages compiled, $((SECONDS - start))s"; fi
    done; then
  say "build failed (go build ./cmd in $src); the end of $buildlog:"
  tail -n 30 "$buildlog" | sed 's/^/[peers] go-operator:   /'
  rm -f "$tmp"
  exit 1
fi
if [ ! -x "$tmp" ]; then
  say "build failed: go build -v ./cmd in $src wrote no binary; run it there to see why"
  exit 1
fi
mv -f "$tmp" "$bin"
echo "$rev" >"$stamp"
say "done in $((SECONDS - start))s: $bin ($(du -h "$bin" | cut -f1))"
