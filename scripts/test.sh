#!/usr/bin/env bash
# Set up (if needed) and run every check: lint, format, import contracts, types, then the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports --no-cache
.venv/bin/mypy  # the package, as [tool.mypy] in pyproject.toml says
exec .venv/bin/python -m pytest "$@"
