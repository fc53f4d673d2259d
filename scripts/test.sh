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
# First it installs what the tests need and a fresh Debian machine lacks (quick when
# all is there): Debian's postgresql server when no initdb is found, chromium and
# chromium-driver for the browser stories
# (tests/e2e/browser.rs), with apt-get (sudo unless root), and the Python package
# aiosmtpd for the SMTP server of the email stories (tests/smtp_sink.py), with pip or
# else Debian's python3-aiosmtpd. With CI=true a failed install is an error.
#
# Environment:
#   SLOTGUARD_TEST_INSTALL=0     install nothing (stories that need what is missing
#                                then skip, or fail with CI=true)
#   SLOTGUARD_TEST_DATABASE_URL  use this database instead of starting a server
#   SLOTGUARD_PG_BINDIR          directory with initdb/pg_ctl/postgres (default:
#                                `pg_config --bindir`, else the newest
#                                /usr/lib/postgresql/*/bin, else initdb on PATH)
#   CI=true                      a missing PostgreSQL fails instead of skipping
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/lib/pg.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/pg.sh"

as_root() {
  if [[ "$(id -u)" -eq 0 ]]; then
    "$@"
  else
    sudo "$@"
  fi
}

apt_updated=""
apt_install() {
  command -v apt-get >/dev/null 2>&1 || return 1
  if [[ -z "$apt_updated" ]]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null >&2 || return 1
    apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" \
    </dev/null >&2
}

# A tool the tests need could not be installed: an error in CI, else a warning (the
# stories that need it skip or fail, naming it).
install_failed() {
  if is_ci; then
    printf 'error: could not install %s; CI=true needs it.\n' "$1" >&2
    exit 1
  fi
  printf 'warning: could not install %s; the tests that need it will say so.\n' "$1" >&2
}

have_chromium() { [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; }
have_aiosmtpd() { python3 -c 'import aiosmtpd' >/dev/null 2>&1; }

install_test_tools() {
  if ! find_pg_bindir >/dev/null; then
    echo "Installing the PostgreSQL server (apt-get) for the PostgreSQL tests" >&2
    apt_install postgresql && find_pg_bindir >/dev/null ||
      install_failed "the PostgreSQL server binaries (initdb, pg_ctl, postgres)"
  fi
  if ! have_chromium; then
    echo "Installing chromium and chromium-driver (apt-get) for the browser tests" >&2
    apt_install chromium chromium-driver && have_chromium ||
      install_failed "chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)"
  fi
  if ! have_aiosmtpd; then
    echo "Installing aiosmtpd (pip, else apt-get python3-aiosmtpd) for the email tests" >&2
    PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
      python3 -m pip install --quiet aiosmtpd </dev/null >&2 || true
    have_aiosmtpd || { apt_install python3-aiosmtpd && have_aiosmtpd; } ||
      install_failed "the Python package aiosmtpd"
  fi
}

if [[ "${SLOTGUARD_TEST_INSTALL:-1}" != 0 ]]; then
  install_test_tools
fi

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

# The slow-client story holds ~2,600 sockets (clients and server in one process):
# lift the soft open-files limit to the hard one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

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
