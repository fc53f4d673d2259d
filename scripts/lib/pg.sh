#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests, chaos runs and benchmarks. Source it, then:
#   start_pg      start one (fresh temp dir, trust auth, 127.0.0.1 on a free port);
#                 on failure sets $skip_reason and returns 1
#   restart_pg    crash it (immediate stop) and start it again on the same port
#   stop_pg       stop it and remove its files (safe to call repeatedly)
# After start_pg: $pg_port, $pg_tmp (data in $pg_tmp/data), $pg_bindir.
# PG_DURABLE=1 keeps fsync and synchronous_commit on (benchmarks, chaos); the default
# turns them off, which is fine for tests that do not crash the database.
# As root, server commands run as the `postgres` user (PostgreSQL refuses root).

pg_tmp=""     # temp dir holding data/, the server log and the unix socket
pg_bindir=""  # where initdb, pg_ctl and postgres live
pg_port=""
pg_runas=""   # how to run server commands: "" (as us), "runuser" or "su"
skip_reason=""
skip_line=""

is_ci() {
  case "${CI:-}" in
    true | TRUE | True | 1 | yes) return 0 ;;
    *) return 1 ;;
  esac
}

# Print the PostgreSQL server bin dir, or fail if there is none.
find_pg_bindir() {
  local d best=""
  if [[ -n "${SLOTGUARD_PG_BINDIR:-}" ]]; then
    d=$SLOTGUARD_PG_BINDIR
    [[ -x "$d/initdb" ]] || return 1
    printf '%s\n' "$d"
    return 0
  fi
  if command -v pg_config >/dev/null 2>&1; then
    d=$(pg_config --bindir 2>/dev/null || true)
    if [[ -n "$d" && -x "$d/initdb" ]]; then
      printf '%s\n' "$d"
      return 0
    fi
  fi
  for d in /usr/lib/postgresql/*/bin; do
    [[ -x "$d/initdb" ]] || continue
    best=$(printf '%s\n%s\n' "$best" "$d" | sed '/^$/d' | sort -V | tail -n 1)
  done
  if [[ -n "$best" ]]; then
    printf '%s\n' "$best"
    return 0
  fi
  if d=$(command -v initdb 2>/dev/null); then
    dirname "$d"
    return 0
  fi
  return 1
}

# Run a command as the user the server runs as (PostgreSQL refuses root).
as_pg() {
  case "$pg_runas" in
    runuser) runuser -u postgres -- "$@" ;;
    su) su -s /bin/bash -c "$(printf '%q ' "$@")" postgres ;;
    *) "$@" ;;
  esac
}

# Print a free TCP port on 127.0.0.1.
free_port() {
  local p i
  if p=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null) &&
    [[ "$p" =~ ^[0-9]+$ ]]; then
    printf '%s\n' "$p"
    return 0
  fi
  p=$((20000 + RANDOM % 30000))
  for ((i = 0; i < 200; i++)); do
    # A refused connection means nobody listens there.
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      printf '%s\n' "$p"
      return 0
    fi
    p=$((p + 1))
  done
  return 1
}

print_log_tail() {
  local f
  for f in "$@"; do
    if [[ -s "$f" ]]; then
      printf -- '--- last lines of %s ---\n' "$(basename "$f")" >&2
      tail -n 25 "$f" >&2 || true
    fi
  done
}

# Stop the server (if any) and remove the temp dir. Safe to call repeatedly.
stop_pg() {
  local pid
  [[ -n "$pg_tmp" ]] || return 0
  if [[ -f "$pg_tmp/data/postmaster.pid" ]]; then
    (cd "$pg_tmp" && as_pg "$pg_bindir/pg_ctl" -D "$pg_tmp/data" -m immediate -w -t 15 stop) \
      >/dev/null 2>&1 || true
    if [[ -f "$pg_tmp/data/postmaster.pid" ]]; then
      pid=$(head -n 1 "$pg_tmp/data/postmaster.pid" 2>/dev/null || true)
      if [[ "$pid" =~ ^[0-9]+$ ]]; then
        kill -QUIT "$pid" 2>/dev/null || true
        sleep 1
      fi
    fi
  fi
  rm -rf "$pg_tmp" || true
  pg_tmp=""
}

# Start the throwaway server; on failure set skip_reason and return 1.
start_pg() {
  local data log attempt

  if ! pg_bindir=$(find_pg_bindir); then
    if [[ -n "${SLOTGUARD_PG_BINDIR:-}" ]]; then
      skip_reason="no initdb in SLOTGUARD_PG_BINDIR=$SLOTGUARD_PG_BINDIR"
    else
      skip_reason="no PostgreSQL server binaries found (no initdb via pg_config, /usr/lib/postgresql/*/bin or PATH; install the 'postgresql' package)"
    fi
    return 1
  fi
  if [[ ! -x "$pg_bindir/pg_ctl" || ! -x "$pg_bindir/postgres" ]]; then
    skip_reason="$pg_bindir has initdb but not pg_ctl and postgres"
    return 1
  fi

  if [[ "$(id -u)" -eq 0 ]]; then
    if ! id postgres >/dev/null 2>&1; then
      skip_reason="running as root (PostgreSQL refuses root) and there is no 'postgres' system user"
      return 1
    fi
    if command -v runuser >/dev/null 2>&1 && runuser -u postgres -- true </dev/null >/dev/null 2>&1; then
      pg_runas=runuser
    elif su -s /bin/sh -c true postgres </dev/null >/dev/null 2>&1; then
      pg_runas=su
    else
      skip_reason="running as root and cannot switch to the 'postgres' user (runuser/su failed)"
      return 1
    fi
  fi

  if ! pg_tmp=$(mktemp -d /tmp/slotguard-pg.XXXXXX); then
    pg_tmp=""
    skip_reason="mktemp -d /tmp/slotguard-pg.XXXXXX failed"
    return 1
  fi
  chmod 700 "$pg_tmp"
  if [[ -n "$pg_runas" ]] && ! chown postgres "$pg_tmp"; then
    skip_reason="cannot chown $pg_tmp to postgres"
    return 1
  fi
  data=$pg_tmp/data
  log=$pg_tmp/postgres.log

  if ! (cd "$pg_tmp" && as_pg "$pg_bindir/initdb" -D "$data" --auth=trust --username=postgres \
    --encoding=UTF8 --no-locale) >"$pg_tmp/initdb.log" 2>&1 </dev/null; then
    print_log_tail "$pg_tmp/initdb.log"
    skip_reason="initdb failed ($pg_bindir/initdb)"
    return 1
  fi

  cat >>"$data/postgresql.conf" <<EOF

# --- throwaway server started by scripts/lib/pg.sh ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$pg_tmp'
max_connections = 400
$(if [[ "${PG_DURABLE:-0}" == 1 ]]; then
    echo "fsync = on"
  else
    printf 'fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n'
  fi)
shared_buffers = 128MB
EOF

  # Retry with another port if someone grabbed ours in the meantime.
  for attempt in 1 2 3; do
    if ! pg_port=$(free_port); then
      skip_reason="could not find a free TCP port on 127.0.0.1"
      return 1
    fi
    # pg_ctl -w waits (up to 30 s) until the server accepts connections; it
    # also puts the postmaster in its own session, so Ctrl-C does not reach it.
    if (cd "$pg_tmp" && as_pg "$pg_bindir/pg_ctl" -D "$data" -l "$log" -o "-p $pg_port" \
      -w -t 30 start) >"$pg_tmp/pg_ctl.log" 2>&1 </dev/null; then
      if [[ ! -x "$pg_bindir/pg_isready" ]] ||
        "$pg_bindir/pg_isready" -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres; then
        return 0
      fi
    fi
    # Make sure a half-started server is gone before retrying or giving up.
    (cd "$pg_tmp" && as_pg "$pg_bindir/pg_ctl" -D "$data" -m immediate -w -t 15 stop) \
      >/dev/null 2>&1 || true
    if [[ $attempt -lt 3 ]] && grep -qiE 'could not bind|already in use' "$log" 2>/dev/null; then
      : >"$log" || true
      continue
    fi
    break
  done
  print_log_tail "$pg_tmp/pg_ctl.log" "$log"
  skip_reason="PostgreSQL server did not start ($pg_bindir/postgres, port $pg_port, log above)"
  return 1
}


# Crash the server (immediate stop: no checkpoint, like a power cut for PostgreSQL's
# own data) and start it again on the same port with the same data.
restart_pg() {
  local data=$pg_tmp/data
  (cd "$pg_tmp" && as_pg "$pg_bindir/pg_ctl" -D "$data" -m immediate -w -t 15 stop) >/dev/null 2>&1 || true
  (cd "$pg_tmp" && as_pg "$pg_bindir/pg_ctl" -D "$data" -l "$pg_tmp/postgres.log" -o "-p $pg_port" \
    -w -t 60 start) >"$pg_tmp/pg_ctl.log" 2>&1 </dev/null
}
