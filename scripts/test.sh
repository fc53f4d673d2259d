#!/usr/bin/env bash
# Run every slotguard test:  scripts/test.sh [extra `cargo test` args, e.g. a name filter]
#
# Unless SLOTGUARD_TEST_DATABASE_URL is already set, this starts a throwaway
# PostgreSQL server (fresh temp dir, trust auth, 127.0.0.1 on a free port),
# exports SLOTGUARD_TEST_DATABASE_URL for it, runs `cargo test "$@"`, and
# removes the server again on exit (also on failure or Ctrl-C). Without arguments it
# then runs the short fault-injection run, scripts/chaos.sh --short.
#
# If PostgreSQL cannot be found or started, a line starting with
# "SKIPPED: PostgreSQL tests" goes to stderr and SLOTGUARD_TEST_POSTGRES=skip is
# exported so the Rust tests know; with CI=true that is an error (exit 1).
#
# Environment:
#   SLOTGUARD_TEST_DATABASE_URL  use this database instead of starting a server
#   SLOTGUARD_PG_BINDIR          directory with initdb/pg_ctl/postgres (default:
#                                `pg_config --bindir`, else the newest
#                                /usr/lib/postgresql/*/bin, else initdb on PATH)
#   CI=true                      a missing PostgreSQL fails instead of skipping
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/lib/pg.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/pg.sh"

trap stop_pg EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -n "${SLOTGUARD_TEST_DATABASE_URL:-}" ]]; then
  export SLOTGUARD_TEST_DATABASE_URL
elif start_pg; then
  export SLOTGUARD_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
  echo "PostgreSQL $(cat "$pg_tmp/data/PG_VERSION" 2>/dev/null || echo '?') test server on 127.0.0.1:$pg_port" >&2
else
  stop_pg
  unset SLOTGUARD_TEST_DATABASE_URL
  skip_line="SKIPPED: PostgreSQL tests: $skip_reason"
  if is_ci; then
    printf '\n%s\nCI=true: PostgreSQL tests must run in CI, failing.\n' "$skip_line" >&2
    exit 1
  fi
  printf '\n%s\n\n' "$skip_line" >&2
  export SLOTGUARD_TEST_POSTGRES=skip
fi

rc=0
cargo test "$@" || rc=$?

# The short fault-injection run: load, SIGKILLs, database crashes, then `slotguard
# check`. Only for a full run (no test filter), and only when the tests passed.
if [[ $rc -eq 0 && $# -eq 0 ]]; then
  chaos_stores=both
  [[ -n "$skip_line" ]] && chaos_stores=sqlite
  scripts/chaos.sh --short --store "$chaos_stores" || rc=$?
fi

if [[ -n "$skip_line" ]]; then
  printf '\n%s\n' "$skip_line" >&2
fi
exit "$rc"
