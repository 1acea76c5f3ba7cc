#!/usr/bin/env bash
# Set up (if needed) and run lipservice-proxy. Without arguments: `lipservice-proxy run` on the
# embedded defaults (OTLP on 127.0.0.1:4317/4318, admin on 127.0.0.1:8888, debug exporter).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >&2
if [ $# -eq 0 ]; then
  set -- run
fi
exec .venv/bin/lipservice-proxy "$@"
