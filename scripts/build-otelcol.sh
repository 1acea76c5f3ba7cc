#!/usr/bin/env bash
# Build the OpenTelemetry Collector peer (tools/otelcol/manifest.yaml) with the Collector Builder, once,
# into a cache folder outside the repository; print the binary's path. A second call with the same
# manifest only prints the path. Needs Go and the Go module proxy.
#   LIPSERVICE_CACHE   cache root (default ~/.cache/lipservice-proxy)
set -euo pipefail
cd "$(dirname "$0")/.."
manifest=tools/otelcol/manifest.yaml
builder_version=v0.165.0   # the Builder of the manifest's core release
cache="${LIPSERVICE_CACHE:-$HOME/.cache/lipservice-proxy}"
key=$( (cat "$manifest"; echo "$builder_version"; go env GOVERSION) | sha256sum | cut -c1-12)
out="$cache/otelcol-$key"
binary="$out/otelcol-peer"
if [ -x "$binary" ]; then
  echo "$binary"
  exit 0
fi
export GOTOOLCHAIN=local
mkdir -p "$cache/bin"
if [ ! -x "$cache/bin/builder-$builder_version" ]; then
  GOBIN="$cache/bin/tmp" go install "go.opentelemetry.io/collector/cmd/builder@$builder_version" >&2
  mv "$cache/bin/tmp/builder" "$cache/bin/builder-$builder_version"
fi
work="$out.tmp"
rm -rf "$work"
mkdir -p "$work"
# The Builder writes main.go and go.mod, then runs `go mod tidy`, which also resolves the test imports of
# every component; a few of those are not served by the module proxy (tools/otelcol/manifest.yaml), so
# its tidy fails. `go mod tidy -e` records everything the binary itself needs, and the build needs no more.
"$cache/bin/builder-$builder_version" --config "$manifest" --skip-compilation --output-path "$work" \
  >"$work/builder.log" 2>&1 || true
[ -f "$work/go.mod" ] || { cat "$work/builder.log" >&2; echo "build-otelcol: the Builder wrote no go.mod" >&2; exit 1; }
(cd "$work" && go mod tidy -e >tidy.log 2>&1 && go build -trimpath -ldflags="-s -w" -o otelcol-peer .) >&2
rm -rf "$out"
mv "$work" "$out"
echo "$binary"
