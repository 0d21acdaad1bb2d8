#!/usr/bin/env bash
# scripts/postgres.sh - a local PostgreSQL for lockstep's store tests.
#
# Installs Debian's `postgresql` if missing and runs a cluster of its own, not the package's
# default cluster (that one is started by a service manager, which a CI container lacks):
# `initdb` into the state dir as the `postgres` user, listening on 127.0.0.1 only, with its
# unix socket in the state dir. Fixtures:
#   - role `lockstep` (password login over TCP) owning database `lockstep`: what one
#     `lockstep serve` deployment gets;
#   - role `lockstep_admin`, a superuser with a password, for tests that create and drop a
#     database of their own per test, or end other sessions (`pg_terminate_backend`).
# Idempotent: re-running it skips the work already done and leaves one server running.
# When it installs the package itself and the package started its default cluster, it stops
# that cluster and disables the service (the tests never use it).
#
# Usage:  scripts/postgres.sh [start|stop|status|env]   (default: start; start/stop need root)
#   start   install if needed, create the cluster if needed, start it, apply the fixtures,
#           write the env file, print it
#   stop    stop the server started by `start` (a fast shutdown: clean, with a checkpoint)
#   status  say whether it runs (exit 0) or not (exit 1)
#   env     print the path of the env file
#
# Environment (all optional):
#   POSTGRES_PORT=5433   (5432 is left to a packaged cluster, should one run)
#   POSTGRES_STATE_DIR=${TMPDIR:-/tmp}/lockstep-postgres   (data dir, socket, log, env file)
#
# The env file holds KEY=value lines: LOCKSTEP_TEST_DATABASE_URL (role `lockstep`, database
# `lockstep`) and LOCKSTEP_TEST_ADMIN_DATABASE_URL (role `lockstep_admin`, database
# `postgres`), both postgres://user:password@127.0.0.1:PORT/db. Load it with
#   set -a; . "$(scripts/postgres.sh env)"; set +a
set -euo pipefail

BIND=127.0.0.1
PORT="${POSTGRES_PORT:-5433}"
STATE="${POSTGRES_STATE_DIR:-${TMPDIR:-/tmp}/lockstep-postgres}"
DATA="$STATE/data"
RUN="$STATE/run"          # the unix socket and a world-readable pid file
PIDFILE="$RUN/postgres.pid"
LOG="$STATE/server.log"
ENVFILE="$STATE/env"
CONF_NAME=lockstep-test.conf

log() { printf '[postgres %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { echo "scripts/postgres.sh: $*" >&2; exit 1; }
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

# A zombie (a server killed after its parent left, not yet reaped by init) is dead.
alive() { [ -n "$1" ] && [ -d "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

server_pid() {  # prints the postmaster's pid when our server is alive
  [ -f "$PIDFILE" ] || return 1
  local pid; pid=$(head -1 "$PIDFILE")
  alive "$pid" && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-D $DATA" \
    && echo "$pid"
}

stop_server() {
  local pid
  if pid=$(server_pid); then
    log "stopping server pid $pid"
    # SIGINT is PostgreSQL's "fast" shutdown (what `pg_ctl stop -m fast` sends): sessions are
    # ended, a checkpoint is written. Signalling works whatever the server's version.
    kill -INT "$pid" || die "cannot signal pid $pid; run \`scripts/postgres.sh stop\` as root"
    local T; T=$(date +%s%N)
    for _ in $(seq 1 600); do
      alive "$pid" || break
      sleep 0.1
    done
    alive "$pid" && die "the server (pid $pid) did not stop within 60 s; its log: $LOG"
    log "stopped in $(ms_since "$T") ms"
  else
    log "server not running"
  fi
  rm -f "$PIDFILE"
}

# One `start` or `stop` at a time (two CI jobs, say): the second waits, then finds the work
# done.
lock_state() { mkdir -p "$STATE"; exec 9>"$STATE/lock"; flock 9; }

case "${1:-start}" in
  stop)
    [ "$(id -u)" = 0 ] || die "stop: run it as root (the server runs as \`postgres\`)"
    lock_state; stop_server; exit 0 ;;
  status)
    if pid=$(server_pid); then
      # The port it really listens on is in its socket's name, whatever POSTGRES_PORT says now.
      sock=$(find "$RUN" -maxdepth 1 -name '.s.PGSQL.*[0-9]' -printf '%f\n' 2>/dev/null | head -1)
      echo "running pid $pid at $BIND:${sock##*.}"; exit 0
    else
      echo "not running"; exit 1
    fi ;;
  env) echo "$ENVFILE"; exit 0 ;;
  start) ;;
  *) echo "usage: $0 [start|stop|status|env]" >&2; exit 2 ;;
esac

[ "$(id -u)" = 0 ] || die "start: run it as root (it installs packages and runs PostgreSQL as \`postgres\`)"
if ! [[ "$PORT" =~ ^[0-9]{1,5}$ ]] || [ "$PORT" -lt 1 ] || [ "$PORT" -gt 65535 ]; then
  die "POSTGRES_PORT=\`$PORT\` is not a port number; set a number from 1 to 65535"
fi
# The socket path must fit in sun_path (107 bytes).
[ "${#RUN}" -le 80 ] || die "the state dir \`$STATE\` is too long for a unix socket path; set a shorter POSTGRES_STATE_DIR"
T0=$(date +%s%N)
lock_state

# 1. Install.
installed() { [ "$(dpkg-query -W -f='${Status}\n' "$@" 2>/dev/null | grep -c 'install ok installed')" = $# ]; }
if installed postgresql; then
  log "postgresql already installed"
else
  log "installing postgresql"
  if ! apt-cache policy postgresql 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    apt-get -o DPkg::Lock::Timeout=600 update -q >&2
  fi
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
    --no-install-recommends postgresql >&2 \
    || die "installing \`postgresql\` failed (see apt's output above); fix apt, then run this again"
  # Where a service manager runs (or no policy-rc.d forbids it), the package has just
  # started its default cluster on 5432. The tests run their own cluster.
  if command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q ' online'; then
    log "stopping and disabling the package's default cluster (the tests do not use it)"
    if [ -d /run/systemd/system ]; then
      systemctl disable --now postgresql >&2 || true
    else
      service postgresql stop >&2 || true
      update-rc.d postgresql disable >&2 2>/dev/null || true
    fi
  fi
  log "installed in $(ms_since "$T0") ms"
fi
# The newest installed server, e.g. /usr/lib/postgresql/15/bin.
BIN=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' 2>/dev/null \
        | sort -V | tail -1 | xargs -r dirname)
[ -n "$BIN" ] || die "no \`initdb\` under /usr/lib/postgresql; reinstall it: apt-get install --reinstall postgresql"
MAJOR=$(basename "$(dirname "$BIN")")
id postgres >/dev/null 2>&1 || die "the package created no \`postgres\` user; reinstall it: apt-get install --reinstall postgresql-common"

# Runs a command as `postgres` (PostgreSQL refuses to run as root) from a folder it can read,
# without the lock's fd 9: a server that inherited it would hold the lock for its lifetime.
as_postgres() {
  (cd / && setpriv --reuid=postgres --regid=postgres --init-groups \
     env HOME=/var/lib/postgresql "$@" 9>&-)
}

# 2. The cluster. A data dir left by an interrupted initdb or by another major version holds
#    nothing worth keeping (tests create their data): make a new one.
as_postgres test -x "$STATE" \
  || die "the \`postgres\` user cannot enter \`$STATE\`; set POSTGRES_STATE_DIR (or TMPDIR) to a folder every user can traverse"
if [ -f "$DATA/PG_VERSION" ] && [ "$(cat "$DATA/PG_VERSION")" != "$MAJOR" ]; then
  log "the cluster in $DATA is from PostgreSQL $(cat "$DATA/PG_VERSION"), not $MAJOR: making a new one"
  stop_server
  rm -rf "$DATA"
elif [ -d "$DATA" ] && [ ! -f "$DATA/PG_VERSION" ]; then
  log "removing the unfinished cluster in $DATA"
  rm -rf "$DATA"
fi
install -d -o postgres -g postgres -m 755 "$RUN"
if [ ! -d "$DATA" ]; then
  log "initdb (PostgreSQL $MAJOR) into $DATA"
  T=$(date +%s%N)
  install -d -o postgres -g postgres -m 700 "$DATA"
  # --no-sync: this cluster is test scratch (see fsync below). Peer auth on the socket is the
  # script's own way in; TCP logins need a password.
  as_postgres "$BIN/initdb" -D "$DATA" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
    --no-locale --encoding=UTF8 --no-sync --no-instructions >"$STATE/initdb.log" 2>&1 \
    || { cat "$STATE/initdb.log" >&2; die "initdb failed (its output above)"; }
  echo "include_if_exists = '$CONF_NAME'" >> "$DATA/postgresql.conf"
  log "initdb took $(ms_since "$T") ms"
fi

# 3. Settings for a test cluster. A running server whose settings differ is restarted (the
#    port and max_connections only change at a restart).
CONF=$(cat <<CONF
# Written by scripts/postgres.sh: settings for a throwaway TEST cluster.
listen_addresses = '$BIND'
port = $PORT
unix_socket_directories = '$RUN'
external_pid_file = '$PIDFILE'
# The store tests create and drop a database per test, in parallel, each with a pool.
max_connections = 300
# TEST ONLY, never on a real server: without fsync a crash of the machine can lose or
# corrupt committed data. The tests keep nothing, and each commit skips a disk flush.
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
)
if [ "$(cat "$DATA/$CONF_NAME" 2>/dev/null)" != "$CONF" ]; then
  if server_pid >/dev/null; then
    log "settings changed: restarting"
    stop_server
  fi
  printf '%s\n' "$CONF" > "$DATA/$CONF_NAME"
  chown postgres:postgres "$DATA/$CONF_NAME"
fi

# 4. Start.
if pid=$(server_pid); then
  log "server already running (pid $pid)"
else
  if (: </dev/tcp/"$BIND"/"$PORT") 2>/dev/null; then
    die "something else already listens on $BIND:$PORT; stop it or set POSTGRES_PORT"
  fi
  # After a crash the lock files may name a zombie, which PostgreSQL takes for a running
  # server and refuses to start.
  for lock in "$DATA/postmaster.pid" "$RUN/.s.PGSQL.$PORT.lock"; do
    stale=$(head -1 "$lock" 2>/dev/null || true)
    if [ -n "$stale" ] && ! alive "$stale" && [ -d "/proc/$stale" ]; then
      log "removing $lock of the dead server pid $stale"
      rm -f "$lock"
    fi
  done
  log "starting the server on $BIND:$PORT"
  T=$(date +%s%N)
  touch "$LOG"; chown postgres:postgres "$LOG"
  log_start=$(( $(stat -c %s "$LOG") + 1 ))
  # setsid: the server outlives this script and the caller's process group.
  as_postgres setsid "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start >/dev/null \
    || { tail -c "+$log_start" "$LOG" | tail -20 >&2; die "the server did not start (its log above: $LOG)"; }
  pid=$(server_pid) || die "pg_ctl says the server started, but $PIDFILE names no live server; its log: $LOG"
  log "started in $(ms_since "$T") ms (pid $pid)"
fi

# 5. Roles and database, all idempotent. The passwords are made once and kept in the env file.
url_password() {  # the password in the named URL of the env file, if any
  [ -f "$ENVFILE" ] || return 0
  sed -n "s|^$1=postgres://[^:]*:\([0-9a-f]*\)@.*|\1|p" "$ENVFILE"
}
new_password() { od -An -tx1 -N16 /dev/urandom | tr -d ' \n'; }
APP_PW=$(url_password LOCKSTEP_TEST_DATABASE_URL); APP_PW=${APP_PW:-$(new_password)}
ADMIN_PW=$(url_password LOCKSTEP_TEST_ADMIN_DATABASE_URL); ADMIN_PW=${ADMIN_PW:-$(new_password)}
APP_URL="postgres://lockstep:$APP_PW@$BIND:$PORT/lockstep"
ADMIN_URL="postgres://lockstep_admin:$ADMIN_PW@$BIND:$PORT/postgres"

# The passwords go in on stdin (psql variables), not on a command line others can read.
as_postgres "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$RUN" -p "$PORT" -U postgres -d postgres \
  >/dev/null <<SQL || die "setting up the roles failed (psql's error above); the server log: $LOG"
\set app_pw '$APP_PW'
\set admin_pw '$ADMIN_PW'
SELECT 'CREATE ROLE lockstep' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'lockstep')
\gexec
SELECT 'CREATE ROLE lockstep_admin' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'lockstep_admin')
\gexec
ALTER ROLE lockstep LOGIN NOSUPERUSER PASSWORD :'app_pw';
ALTER ROLE lockstep_admin LOGIN SUPERUSER PASSWORD :'admin_pw';
SELECT 'CREATE DATABASE lockstep OWNER lockstep' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'lockstep')
\gexec
SQL

# 6. Prove both URLs work over TCP with their passwords before handing them out.
for login in "lockstep:$APP_PW:lockstep" "lockstep_admin:$ADMIN_PW:postgres"; do
  IFS=: read -r user pw db <<<"$login"
  out=$(PGPASSWORD="$pw" "$BIN/psql" -X -At -h "$BIND" -p "$PORT" -U "$user" -d "$db" \
          -c 'SELECT current_user' 2>&1) \
    || die "\`$user\` cannot log in over TCP: $out; the server log: $LOG"
done
{ echo "LOCKSTEP_TEST_DATABASE_URL=$APP_URL"; echo "LOCKSTEP_TEST_ADMIN_DATABASE_URL=$ADMIN_URL"; } > "$ENVFILE.tmp"
chmod 600 "$ENVFILE.tmp"
mv "$ENVFILE.tmp" "$ENVFILE"

log "ready in $(ms_since "$T0") ms; PostgreSQL $MAJOR, server pid $pid; env file $ENVFILE"
cat "$ENVFILE"
