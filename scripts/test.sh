#!/usr/bin/env bash
# Installs what the tests need and runs them all: lint, types, then the whole suite on SQLite and
# on PostgreSQL (TEST_POSTGRES_URL, default the local server on 127.0.0.1:5432).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'

# The browser tests (tests/browser) drive Debian's Chromium through Playwright; they fail without it.
# Never `playwright install`: it downloads a browser build of its own.
if ! command -v chromium >/dev/null 2>&1; then
  echo "== installing chromium"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy

echo "== tests on SQLite"
.venv/bin/python -m pytest -q -p no:cacheprovider

echo "== tests on PostgreSQL"
TEST_DATABASE_URL=${TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/postgres} \
  .venv/bin/python -m pytest -q -p no:cacheprovider
