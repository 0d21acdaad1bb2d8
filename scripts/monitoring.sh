#!/usr/bin/env bash
# scripts/monitoring.sh - Prometheus and Alertmanager for lockstep's gate and alert tests.
#
# Installs Debian's `prometheus` and `prometheus-alertmanager` if missing. Nothing keeps
# running afterwards: each test starts its own Prometheus and Alertmanager on 127.0.0.1
# ports, with its own config, data dirs and fast intervals. So `start` installs, then checks
# on this machine what the tests will do: both binaries start on 127.0.0.1 with a minimal
# config and a temporary data dir and answer /-/ready, and an always-firing rule reaches the
# Alertmanager. It prints how long each step took, stops both and writes the env file.
# The package services are not used: when the install started them, they are stopped and
# disabled. Idempotent.
#
# Usage:  scripts/monitoring.sh [start|stop|status|env]   (default: start; installing needs root)
#   start   install if needed, check both binaries, write the env file, print it
#   stop    stop check instances an interrupted `start` left running
#   status  say whether the env file names working binaries (exit 0) or not (exit 1)
#   env     print the path of the env file
#
# Environment (all optional):
#   MONITORING_STATE_DIR=${TMPDIR:-/tmp}/lockstep-monitoring   (env file, check logs)
#
# The env file holds KEY=value lines: PROMETHEUS_BIN, PROMETHEUS_VERSION, PROMTOOL_BIN,
# ALERTMANAGER_BIN, ALERTMANAGER_VERSION, AMTOOL_BIN (a tool's line is absent when the
# package lacks it). Load it with
#   set -a; . "$(scripts/monitoring.sh env)"; set +a
set -euo pipefail

STATE="${MONITORING_STATE_DIR:-${TMPDIR:-/tmp}/lockstep-monitoring}"
ENVFILE="$STATE/env"
BIND=127.0.0.1
# The versions the tests' configs and payloads were checked against (Debian 12's); older ones
# are refused rather than failing later in a test with a puzzling config error.
MIN_PROMETHEUS=2.42
MIN_ALERTMANAGER=0.25

log() { printf '[monitoring %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { echo "scripts/monitoring.sh: $*" >&2; exit 1; }
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
# A zombie (a process whose parent left, not yet reaped by init) is dead.
alive() { [ -n "$1" ] && [ -d "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

# Stops the check instance recorded in $STATE/NAME.pid, if it still runs; says so when the
# second argument is `leftover`.
stop_check() {
  local name=$1 pidfile="$STATE/$1.pid" pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if alive "$pid" && grep -q "$name" "/proc/$pid/cmdline" 2>/dev/null; then
    [ "${2:-}" != leftover ] || log "stopping the $name (pid $pid) an interrupted check left running"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do alive "$pid" || break; sleep 0.02; done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$pidfile"
}

env_ok() {  # the env file exists and names executables
  [ -f "$ENVFILE" ] || return 1
  local bin
  for key in PROMETHEUS_BIN ALERTMANAGER_BIN; do
    bin=$(sed -n "s/^$key=//p" "$ENVFILE")
    [ -n "$bin" ] && [ -x "$bin" ] || return 1
  done
}

# One `start` or `stop` at a time; the servers get no fd 9, so they never hold the lock.
lock_state() {
  if ! mkdir -p "$STATE" 2>/dev/null || [ ! -w "$STATE" ]; then
    die "cannot write to \`$STATE\`; set MONITORING_STATE_DIR to a folder you can write to"
  fi
  exec 9>"$STATE/lock"
  flock 9
}
stop_leftovers() {
  stop_check prometheus leftover; stop_check alertmanager leftover
  rm -rf "$STATE"/check.*
}

case "${1:-start}" in
  stop) lock_state; stop_leftovers; log "no check instance runs (the tests start their own)"; exit 0 ;;
  status)
    if env_ok; then
      echo "ready: prometheus $(sed -n 's/^PROMETHEUS_VERSION=//p' "$ENVFILE")," \
        "alertmanager $(sed -n 's/^ALERTMANAGER_VERSION=//p' "$ENVFILE")"
      exit 0
    else
      echo "not ready (run scripts/monitoring.sh start)"; exit 1
    fi ;;
  env) echo "$ENVFILE"; exit 0 ;;
  start) ;;
  *) echo "usage: $0 [start|stop|status|env]" >&2; exit 2 ;;
esac

T0=$(date +%s%N)
lock_state

# 1. Install.
installed() { [ "$(dpkg-query -W -f='${Status}\n' "$@" 2>/dev/null | grep -c 'install ok installed')" = $# ]; }

# Stops and disables a package's service if the install started it (the tests run their own).
stop_package_service() {
  if [ -d /run/systemd/system ]; then
    systemctl is-active --quiet "$1" 2>/dev/null || return 0
    log "stopping and disabling the package's $1 service (the tests run their own)"
    systemctl disable --now "$1" >&2 || true
  elif [ -x "/etc/init.d/$1" ] && service "$1" status >/dev/null 2>&1; then
    log "stopping and disabling the package's $1 service (the tests run their own)"
    service "$1" stop >&2 || true
    update-rc.d "$1" disable >/dev/null 2>&1 || true
  fi
}

PACKAGES=(prometheus prometheus-alertmanager curl)
if installed "${PACKAGES[@]}"; then
  log "prometheus and prometheus-alertmanager already installed"
else
  [ "$(id -u)" = 0 ] || die "start: run it as root once to install ${PACKAGES[*]} (later runs need no root)"
  log "installing ${PACKAGES[*]}"
  for p in "${PACKAGES[@]}"; do
    if ! apt-cache policy "$p" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
      apt-get -o DPkg::Lock::Timeout=600 update -q >&2
      break
    fi
  done
  # --no-install-recommends skips prometheus-node-exporter, which the tests do not scrape.
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
    --no-install-recommends "${PACKAGES[@]}" >&2 \
    || die "installing ${PACKAGES[*]} failed (see apt's output above); fix apt, then run this again"
  stop_package_service prometheus
  stop_package_service prometheus-alertmanager
  log "installed in $(ms_since "$T0") ms"
fi

# 2. Binaries and versions: the packages' own, whatever else is on PATH. Debian names the
#    Alertmanager binary `prometheus-alertmanager`.
package_bin() {  # PACKAGE NAME: the path of bin/NAME shipped by PACKAGE, if any
  dpkg -L "$1" 2>/dev/null | grep -m1 "/bin/$2\$" || true
}
PROMETHEUS_BIN=$(package_bin prometheus prometheus)
PROMTOOL_BIN=$(package_bin prometheus promtool)
ALERTMANAGER_BIN=$(package_bin prometheus-alertmanager prometheus-alertmanager)
AMTOOL_BIN=$(package_bin prometheus-alertmanager amtool)
[ -x "$PROMETHEUS_BIN" ] \
  || die "the \`prometheus\` package ships no bin/prometheus; reinstall it: apt-get install --reinstall prometheus"
[ -x "$ALERTMANAGER_BIN" ] \
  || die "the \`prometheus-alertmanager\` package ships no bin/prometheus-alertmanager; reinstall it: apt-get install --reinstall prometheus-alertmanager"

# `prometheus, version 2.42.0+ds (branch: ...)` -> 2.42.0+ds
version_of() {
  "$1" --version 2>&1 | sed -n '1s/^[a-z-]*, version \([^ ]*\).*/\1/p'
}
at_least() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -1)" = "$1" ]; }
PROMETHEUS_VERSION=$(version_of "$PROMETHEUS_BIN")
ALERTMANAGER_VERSION=$(version_of "$ALERTMANAGER_BIN")
[ -n "$PROMETHEUS_VERSION" ] || die "\`$PROMETHEUS_BIN --version\` printed no version; is it Prometheus?"
[ -n "$ALERTMANAGER_VERSION" ] || die "\`$ALERTMANAGER_BIN --version\` printed no version; is it Alertmanager?"
at_least "$MIN_PROMETHEUS" "$PROMETHEUS_VERSION" \
  || die "Prometheus $PROMETHEUS_VERSION is older than $MIN_PROMETHEUS, which the tests need; install a newer \`prometheus\`"
at_least "$MIN_ALERTMANAGER" "$ALERTMANAGER_VERSION" \
  || die "Alertmanager $ALERTMANAGER_VERSION is older than $MIN_ALERTMANAGER, which the tests need; install a newer \`prometheus-alertmanager\`"
log "prometheus $PROMETHEUS_VERSION ($PROMETHEUS_BIN), alertmanager $ALERTMANAGER_VERSION ($ALERTMANAGER_BIN)"
[ -n "$PROMTOOL_BIN" ] || log "no promtool: the tests cannot check rule files offline"
[ -n "$AMTOOL_BIN" ] || log "no amtool: the tests cannot check Alertmanager configs offline"

# 3. Check what the tests will do: both on free 127.0.0.1 ports, with their own data dirs and
#    fast intervals, answer /-/ready. Once per pair of versions (and version of this script)
#    it also waits for Prometheus's first scrape and for an always-firing rule to reach the
#    Alertmanager: that path takes ~5 s (see below) and only changes with the packages.
stop_leftovers
CHECK=$(mktemp -d "$STATE/check.XXXXXX")
trap 'stop_check prometheus; stop_check alertmanager; rm -rf "$CHECK"' EXIT
STAMP="$PROMETHEUS_VERSION $ALERTMANAGER_VERSION $(sha256sum < "${BASH_SOURCE[0]}" | cut -d' ' -f1)"
full_check=yes
[ "$(cat "$STATE/alert-path.ok" 2>/dev/null)" = "$STAMP" ] && env_ok && full_check=""

free_port() {  # a port nothing answers on (the servers would fail on a taken one anyway)
  local port
  for _ in $(seq 1 100); do
    port=$(( 20000 + RANDOM % 30000 ))
    (: </dev/tcp/$BIND/$port) 2>/dev/null || { echo "$port"; return 0; }
  done
  die "found no free port on $BIND"
}
AM_PORT=$(free_port)
PROM_PORT=$(free_port)
[ "$AM_PORT" != "$PROM_PORT" ] || PROM_PORT=$(free_port)

cat > "$CHECK/alertmanager.yml" <<YAML
route:
  receiver: none
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: none
YAML
cat > "$CHECK/rules.yml" <<'YAML'
groups:
  - name: check
    rules:
      - alert: LockstepCheck
        expr: vector(1)
        for: 0s
        labels: {lockstep_repo: check}
YAML
cat > "$CHECK/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [rules.yml]
alerting:
  alertmanagers:
    - static_configs: [{targets: ["$BIND:$AM_PORT"]}]
scrape_configs:
  - job_name: prometheus
    static_configs: [{targets: ["$BIND:$PROM_PORT"]}]
YAML
if [ -n "$PROMTOOL_BIN" ]; then
  "$PROMTOOL_BIN" check config "$CHECK/prometheus.yml" >"$CHECK/promtool.log" 2>&1 \
    || { cat "$CHECK/promtool.log" >&2; die "promtool rejects the minimal config (above)"; }
fi
if [ -n "$AMTOOL_BIN" ]; then
  "$AMTOOL_BIN" check-config "$CHECK/alertmanager.yml" >"$CHECK/amtool.log" 2>&1 \
    || { cat "$CHECK/amtool.log" >&2; die "amtool rejects the minimal config (above)"; }
fi

# Starts NAME: BIN ARGS... in the background (without the lock's fd 9) and records its pid.
launch() {
  local name=$1; shift
  "$@" </dev/null >"$STATE/$name.log" 2>&1 9>&- &
  echo $! > "$STATE/$name.pid"
}
# Waits until NAME answers /-/ready on PORT; prints the milliseconds since T (its launch).
wait_ready() {
  local name=$1 port=$2 t=$3 pid
  pid=$(cat "$STATE/$name.pid")
  for _ in $(seq 1 1500); do
    alive "$pid" || { tail -20 "$STATE/$name.log" >&2; die "$name exited before it was ready (its log above: $STATE/$name.log)"; }
    if curl -fs -o /dev/null "http://$BIND:$port/-/ready"; then ms_since "$t"; return 0; fi
    sleep 0.02
  done
  tail -20 "$STATE/$name.log" >&2
  die "$name was not ready on $BIND:$port within 30 s (its log above: $STATE/$name.log)"
}

# Both start at once, as a test would start them.
# --cluster.listen-address= (empty) turns gossip off: no port of its own, and /-/ready does
# not wait for the cluster to settle.
# --rules.alert.resend-delay=1s: a rule that fires before Prometheus has set up its
# Alertmanager target (which takes ~5 s, see below) loses its first notification and is
# re-sent only after this delay, 1m by default. The tests need the same flag.
T=$(date +%s%N)
launch alertmanager "$ALERTMANAGER_BIN" \
  --config.file="$CHECK/alertmanager.yml" --storage.path="$CHECK/alertmanager-data" \
  --web.listen-address="$BIND:$AM_PORT" --cluster.listen-address=
launch prometheus "$PROMETHEUS_BIN" \
  --config.file="$CHECK/prometheus.yml" --storage.tsdb.path="$CHECK/prometheus-data" \
  --web.listen-address="$BIND:$PROM_PORT" --rules.alert.resend-delay=1s
am_ms=$(wait_ready alertmanager "$AM_PORT" "$T")
prom_ms=$(wait_ready prometheus "$PROM_PORT" "$T")
log "ready after launch: alertmanager $am_ms ms, prometheus $prom_ms ms"

if [ -n "$full_check" ]; then
  # Prometheus hands new scrape and Alertmanager targets over every 5 s (fixed in 2.x), so
  # nothing is scraped and no alert is sent for about 5 s after it starts.
  scraped=""; fired=""
  for _ in $(seq 1 1500); do
    if [ -z "$scraped" ] && curl -fs "http://$BIND:$PROM_PORT/api/v1/query?query=up" | grep -q '"value"'; then
      scraped=$(ms_since "$T")
    fi
    if [ -z "$fired" ] && curl -fs "http://$BIND:$AM_PORT/api/v2/alerts" | grep -q '"alertname":"LockstepCheck"'; then
      fired=$(ms_since "$T")
    fi
    [ -n "$scraped" ] && [ -n "$fired" ] && break
    sleep 0.02
  done
  [ -n "$scraped" ] || die "prometheus scraped nothing within 30 s; its log: $STATE/prometheus.log"
  [ -n "$fired" ] || die "the always-firing rule did not reach the alertmanager within 30 s; logs: $STATE/prometheus.log, $STATE/alertmanager.log"
  log "after launch: first scrape $scraped ms, a firing rule reached the alertmanager $fired ms"
else
  log "scrape and alert path already checked for these versions"
fi

T=$(date +%s%N)
stop_check prometheus
stop_check alertmanager
log "both stopped in $(ms_since "$T") ms"

# 4. The env file.
{
  echo "PROMETHEUS_BIN=$PROMETHEUS_BIN"
  echo "PROMETHEUS_VERSION=$PROMETHEUS_VERSION"
  [ -z "$PROMTOOL_BIN" ] || echo "PROMTOOL_BIN=$PROMTOOL_BIN"
  echo "ALERTMANAGER_BIN=$ALERTMANAGER_BIN"
  echo "ALERTMANAGER_VERSION=$ALERTMANAGER_VERSION"
  [ -z "$AMTOOL_BIN" ] || echo "AMTOOL_BIN=$AMTOOL_BIN"
} > "$ENVFILE.tmp"
mv "$ENVFILE.tmp" "$ENVFILE"
[ -z "$full_check" ] || echo "$STAMP" > "$STATE/alert-path.ok"

log "ready in $(ms_since "$T0") ms; env file $ENVFILE"
cat "$ENVFILE"
