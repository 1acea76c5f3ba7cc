#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: a virtualenv in .venv with the package installed.
# Usage: scripts/setup.sh [EXTRA]   (EXTRA=test adds the test dependencies and system tools)
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --quiet --disable-pip-version-check --upgrade pip
# pip compiles the sampler's per-record scan (Cython, lipservice_proxy/sampling/wirescan.pyx), in place
# for the editable install: that needs a C compiler and Python's headers (Debian: gcc python3-dev).
if ! command -v "${CC:-cc}" >/dev/null 2>&1; then
  echo "setup: no C compiler (${CC:-cc}); install one, e.g. apt-get install gcc python3-dev" >&2
  exit 1
fi
if [ -n "$extra" ]; then
  .venv/bin/python -m pip install --quiet --quiet --disable-pip-version-check -e ".[$extra]"
else
  .venv/bin/python -m pip install --quiet --quiet --disable-pip-version-check -e .
fi
if [ "$extra" = "test" ]; then
  # System tools the tests use: promtool (Debian package prometheus) checks /metrics output;
  # headless Chromium renders the admin status page (tests/test_status_page.py); buildah and
  # debootstrap build and run the container image (scripts/build-image.sh, tests/test_image.py).
  missing=()
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v buildah >/dev/null 2>&1 || missing+=(buildah)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  if [ ${#missing[@]} -gt 0 ]; then
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # The real OpenTelemetry Collector, the interop tests' and the benchmark's peer: built once with Go into
  # a cache folder outside the repository (minutes the first time; tools/otelcol/manifest.yaml).
  scripts/build-otelcol.sh >/dev/null
  # The OpenTelemetry JS log exporters (tests/test_interop_js.py), at the versions of tests/js/package-lock.json
  if [ ! -d tests/js/node_modules ] || [ tests/js/package-lock.json -nt tests/js/node_modules ]; then
    npm ci --prefix tests/js --no-audit --no-fund --loglevel=error >/dev/null
  fi
fi
