#!/usr/bin/env bash
# Installs what the tests need and runs them all: lint, types, then the whole suite on SQLite and,
# at the same time, on PostgreSQL (TEST_POSTGRES_URL, default the local server on 127.0.0.1:5432).
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

# The two suites run side by side (one per core): each makes its own scratch databases and ports, and
# the Redis test of each uses its own Redis database. The PostgreSQL suite's output follows SQLite's.
pg_log=$(mktemp)
trap 'rm -f "$pg_log"' EXIT
echo "== tests on PostgreSQL (in the background) and on SQLite"
TEST_DATABASE_URL=${TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/postgres} \
  TEST_REDIS_URL=${TEST_REDIS_URL_POSTGRES:-redis://127.0.0.1:6379/14} \
  .venv/bin/python -m pytest -q -p no:cacheprovider >"$pg_log" 2>&1 &
pg_pid=$!

echo "== tests on SQLite"
sqlite_rc=0
.venv/bin/python -m pytest -q -p no:cacheprovider || sqlite_rc=$?

pg_rc=0
wait "$pg_pid" || pg_rc=$?
echo "== tests on PostgreSQL"
cat "$pg_log"

[ "$sqlite_rc" -eq 0 ] && [ "$pg_rc" -eq 0 ] || { echo "== failed: SQLite exit $sqlite_rc, PostgreSQL exit $pg_rc"; exit 1; }
