#!/usr/bin/env bash
# scripts/buildbot.sh - a local Buildbot for lockstep's runner tests.
#
# Makes a Python virtual environment with pinned `buildbot`, `buildbot-www` and
# `buildbot-worker` from PyPI, and runs one master and two workers on 127.0.0.1, all in the
# state dir. The master's `master.cfg` is written by this script (see MASTER_CFG below):
#   - a ForceScheduler `force` that declares the properties lockstep sends (`lockstep_task`,
#     `lockstep_delivery`, `lockstep_phase`, `lockstep_repo`, `lockstep_purpose`,
#     `lockstep_env`, `lockstep_vars`) and takes `repository`, `branch` and `revision`;
#   - builders `build`, `test` and `deploy` on both workers: each clones `repository`,
#     checks out `revision` and runs the repository's own `ci/<builder>.sh`, as a team's
#     builders run the scripts kept in its repositories; the script gets the properties as
#     LOCKSTEP_TASK, LOCKSTEP_DELIVERY, LOCKSTEP_PHASE, LOCKSTEP_REPO, LOCKSTEP_PURPOSE,
#     LOCKSTEP_ENV and LOCKSTEP_VARS (the JSON object), and each of the environment's vars
#     as a variable of its own, as lockstep's local steps get them;
#   - a builder `idle` whose only worker never connects: a build request nobody takes;
#   - the web server with its REST API at /api/v2, no login.
# Idempotent: re-running it skips the work already done and leaves one master and two
# workers running (restarted when master.cfg changed).
#
# Usage:  scripts/buildbot.sh [start|stop|status|env]   (default: start)
#   start   make the virtual environment if needed, create the master and workers if
#           needed, start them, wait for the workers to connect, write the env file, print it
#   stop    stop the master and the workers
#   status  say whether the master runs (exit 0) or not (exit 1)
#   env     print the path of the env file
#
# Environment (all optional):
#   BUILDBOT_PORT=8019          the web server (REST API)
#   BUILDBOT_WORKER_PORT=9919   where workers connect
#   BUILDBOT_STATE_DIR=${TMPDIR:-/tmp}/lockstep-buildbot
#
# The env file holds KEY=value lines: BUILDBOT_URL (the web root, ending in `/`),
# BUILDBOT_VERSION, BUILDBOT_VENV, BUILDBOT_MASTER_DIR. Load it with
#   set -a; . "$(scripts/buildbot.sh env)"; set +a
set -euo pipefail

BIND=127.0.0.1
PORT="${BUILDBOT_PORT:-8019}"
WORKER_PORT="${BUILDBOT_WORKER_PORT:-9919}"
STATE="${BUILDBOT_STATE_DIR:-${TMPDIR:-/tmp}/lockstep-buildbot}"
VENV="$STATE/venv"
MASTER="$STATE/master"
WORKERS=(worker1 worker2)
ENVFILE="$STATE/env"
VERSION=4.3.0
PACKAGES=("buildbot==$VERSION" "buildbot-www==$VERSION" "buildbot-worker==$VERSION")
URL="http://$BIND:$PORT/"

log() { printf '[buildbot %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { echo "scripts/buildbot.sh: $*" >&2; exit 1; }
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
# A zombie (a process whose parent left, not yet reaped by init) is dead.
alive() { [ -n "$1" ] && [ -d "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

# The pid of the twistd daemon in DIR when it runs.
daemon_pid() {
  local dir=$1 pid
  [ -f "$dir/twistd.pid" ] || return 1
  pid=$(cat "$dir/twistd.pid")
  # twistd runs from the folder it serves.
  alive "$pid" && [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$(readlink -f "$dir")" ] && echo "$pid"
}

stop_daemon() {
  local dir=$1 pid
  pid=$(daemon_pid "$dir") || { rm -f "$dir/twistd.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do alive "$pid" || break; sleep 0.05; done
  alive "$pid" && kill -KILL "$pid" 2>/dev/null
  rm -f "$dir/twistd.pid"
  log "stopped $(basename "$dir") (pid $pid)"
}

stop_all() {
  for w in "${WORKERS[@]}"; do stop_daemon "$STATE/$w"; done
  stop_daemon "$MASTER"
}

# One `start` or `stop` at a time; the daemons get no fd 9, so they never hold the lock.
lock_state() {
  if ! mkdir -p "$STATE" 2>/dev/null || [ ! -w "$STATE" ]; then
    die "cannot write to \`$STATE\`; set BUILDBOT_STATE_DIR to a folder you can write to"
  fi
  exec 9>"$STATE/lock"
  flock 9
}

case "${1:-start}" in
  stop) lock_state; stop_all; exit 0 ;;
  status)
    if pid=$(daemon_pid "$MASTER"); then
      echo "running: master pid $pid at $URL"; exit 0
    else
      echo "not running (run scripts/buildbot.sh start)"; exit 1
    fi ;;
  env) echo "$ENVFILE"; exit 0 ;;
  start) ;;
  *) echo "usage: $0 [start|stop|status|env]" >&2; exit 2 ;;
esac

for p in "$PORT" "$WORKER_PORT"; do
  if ! [[ "$p" =~ ^[0-9]{1,5}$ ]] || [ "$p" -lt 1 ] || [ "$p" -gt 65535 ]; then
    die "\`$p\` is not a port number; set BUILDBOT_PORT and BUILDBOT_WORKER_PORT to numbers from 1 to 65535"
  fi
done
T0=$(date +%s%N)
lock_state

# 1. The virtual environment, with the pinned packages. A stamp names what it holds.
STAMP="${PACKAGES[*]}"
if [ -x "$VENV/bin/buildbot" ] && [ "$(cat "$VENV/lockstep.stamp" 2>/dev/null)" = "$STAMP" ]; then
  log "buildbot $VERSION already installed in $VENV"
else
  command -v python3 >/dev/null || die "no python3 on PATH; install it (apt-get install python3 python3-venv)"
  log "making a virtual environment in $VENV with ${PACKAGES[*]}"
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" >"$STATE/venv.log" 2>&1; then
    # Debian's python3 lacks venv until python3-venv is installed.
    [ "$(id -u)" = 0 ] || { cat "$STATE/venv.log" >&2; die "python3 cannot make a virtual environment; install python3-venv"; }
    log "installing python3-venv"
    apt-get -o DPkg::Lock::Timeout=600 update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
      --no-install-recommends python3-venv >&2 || die "installing python3-venv failed (apt's output above)"
    rm -rf "$VENV"
    python3 -m venv "$VENV" || die "python3 cannot make a virtual environment in $VENV"
  fi
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PACKAGES[@]}" >&2 \
    || die "pip could not install ${PACKAGES[*]} (its output above)"
  echo "$STAMP" > "$VENV/lockstep.stamp"
  log "installed in $(ms_since "$T0") ms"
fi
command -v git >/dev/null || die "the workers clone with git, which is not on PATH; install it"

# 2. The master and its config. master.cfg is written on every start; a running master whose
#    config differs is restarted.
MASTER_CFG=$(cat <<PY
# Written by scripts/buildbot.sh: the test master of lockstep's runner tests.
import json

from buildbot.plugins import schedulers, steps, util, worker

c = BuildmasterConfig = {}
c['title'] = 'lockstep test CI'
c['titleURL'] = '$URL'
c['buildbotURL'] = '$URL'
c['buildbotNetUsageData'] = None
c['db'] = {'db_url': 'sqlite:///state.sqlite'}
c['protocols'] = {'pb': {'port': 'tcp:$WORKER_PORT:interface=$BIND'}}
c['www'] = {'port': 'tcp:$PORT:interface=$BIND', 'plugins': {}}

c['workers'] = [worker.Worker(name, 'pass') for name in ('worker1', 'worker2', 'absent')]

# What lockstep sends with every build it forces: the candidate (repository, branch,
# revision) and who it is for.
c['schedulers'] = [
    schedulers.ForceScheduler(
        name='force',
        builderNames=['build', 'test', 'deploy', 'idle'],
        codebases=[
            util.CodebaseParameter(
                '',
                repository=util.StringParameter(name='repository', default=''),
                branch=util.StringParameter(name='branch', default=''),
                revision=util.StringParameter(name='revision', default=''),
                project=util.FixedParameter(name='project', default=''),
            )
        ],
        properties=[
            util.StringParameter(name='lockstep_task', default=''),
            util.StringParameter(name='lockstep_delivery', default=''),
            util.StringParameter(name='lockstep_phase', default=''),
            util.StringParameter(name='lockstep_repo', default=''),
            # Why (delivery, autotest, showroom), where (the stage, or showroom), and that
            # environment's vars as a JSON object of strings.
            util.StringParameter(name='lockstep_purpose', default=''),
            util.StringParameter(name='lockstep_env', default=''),
            util.StringParameter(name='lockstep_vars', default='{}'),
        ],
    )
]


@util.renderer
def lockstep_env(props):
    """The build's variables: the environment's vars (lockstep_vars, a JSON object of
    strings), then lockstep's own, which a var cannot override."""
    raw = props.getProperty('lockstep_vars') or '{}'
    try:
        given = json.loads(raw)
    except ValueError:
        given = {}
    env = {}
    if isinstance(given, dict):
        env.update({k: v for k, v in given.items()
                    if isinstance(k, str) and isinstance(v, str) and k.isidentifier()})
    for prop in ('task', 'delivery', 'phase', 'repo', 'purpose', 'env'):
        env['LOCKSTEP_' + prop.upper()] = props.getProperty('lockstep_' + prop) or ''
    env['LOCKSTEP_VARS'] = raw
    return env


def factory(name):
    """Clone the candidate, check out its revision, run the repository's ci/<name>.sh."""
    f = util.BuildFactory()
    f.addStep(steps.Git(repourl=util.Property('repository'), mode='full', method='clobber',
                        name='checkout'))
    f.addStep(steps.ShellCommand(name=name, command=['sh', 'ci/%s.sh' % name],
                                 env=lockstep_env))
    return f


c['builders'] = [
    util.BuilderConfig(name=name, workernames=['worker1', 'worker2'], factory=factory(name))
    for name in ('build', 'test', 'deploy')
] + [
    # Its worker never connects: a build request nobody takes.
    util.BuilderConfig(name='idle', workernames=['absent'], factory=factory('idle')),
]
PY
)
if [ ! -f "$MASTER/buildbot.tac" ]; then
  log "creating the master in $MASTER"
  rm -rf "$MASTER"
  "$VENV/bin/buildbot" create-master -r "$MASTER" >"$STATE/create-master.log" 2>&1 \
    || { cat "$STATE/create-master.log" >&2; die "buildbot create-master failed (above)"; }
fi
if [ "$(cat "$MASTER/master.cfg" 2>/dev/null)" != "$MASTER_CFG" ]; then
  log "writing $MASTER/master.cfg"
  printf '%s\n' "$MASTER_CFG" > "$MASTER/master.cfg.new"
  "$VENV/bin/buildbot" checkconfig "$MASTER/master.cfg.new" >"$STATE/checkconfig.log" 2>&1 \
    || { cat "$STATE/checkconfig.log" >&2; die "buildbot checkconfig rejects the master.cfg (above)"; }
  mv "$MASTER/master.cfg.new" "$MASTER/master.cfg"
  stop_all
fi

# 3. The workers.
for w in "${WORKERS[@]}"; do
  if [ ! -f "$STATE/$w/buildbot.tac" ]; then
    log "creating $w in $STATE/$w"
    rm -rf "${STATE:?}/$w"
    "$VENV/bin/buildbot-worker" create-worker -r "$STATE/$w" "$BIND:$WORKER_PORT" "$w" pass \
      >"$STATE/create-$w.log" 2>&1 \
      || { cat "$STATE/create-$w.log" >&2; die "buildbot-worker create-worker failed (above)"; }
  fi
done

# 4. Start what does not run. `buildbot start` waits until the master is up. setsid: the
#    daemons outlive this script and the caller's process group.
if pid=$(daemon_pid "$MASTER"); then
  log "master already running (pid $pid)"
else
  T=$(date +%s%N)
  (cd "$MASTER" && setsid "$VENV/bin/buildbot" start "$MASTER" >"$STATE/start-master.log" 2>&1 9>&-) \
    || { tail -30 "$MASTER/twistd.log" >&2 2>/dev/null; die "the master did not start (its log: $MASTER/twistd.log)"; }
  log "master started in $(ms_since "$T") ms (pid $(daemon_pid "$MASTER" || echo '?'))"
fi
for w in "${WORKERS[@]}"; do
  if pid=$(daemon_pid "$STATE/$w"); then
    log "$w already running (pid $pid)"
  else
    (setsid "$VENV/bin/buildbot-worker" start "$STATE/$w" >"$STATE/start-$w.log" 2>&1 9>&-) \
      || { tail -30 "$STATE/$w/twistd.log" >&2 2>/dev/null; die "$w did not start (its log: $STATE/$w/twistd.log)"; }
  fi
done

# 5. Wait until the REST API answers and both workers are connected.
T=$(date +%s%N)
connected=0
for _ in $(seq 1 600); do
  if workers=$(python3 - "$URL" 2>/dev/null <<'PY'
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + 'api/v2/workers', timeout=2) as r:
    ws = json.load(r)['workers']
print(sum(1 for w in ws if w['name'] != 'absent' and w['connected_to']))
PY
  ); then
    connected=$workers
    [ "$connected" = "${#WORKERS[@]}" ] && break
  fi
  sleep 0.1
done
[ "$connected" = "${#WORKERS[@]}" ] \
  || die "only $connected of ${#WORKERS[@]} workers connected to $URL within 60 s; logs: $MASTER/twistd.log, $STATE/worker*/twistd.log"
log "REST API at ${URL}api/v2, ${#WORKERS[@]} workers connected after $(ms_since "$T") ms"

# 6. The env file.
{
  echo "BUILDBOT_URL=$URL"
  echo "BUILDBOT_VERSION=$VERSION"
  echo "BUILDBOT_VENV=$VENV"
  echo "BUILDBOT_MASTER_DIR=$MASTER"
} > "$ENVFILE.tmp"
mv "$ENVFILE.tmp" "$ENVFILE"
log "ready in $(ms_since "$T0") ms; env file $ENVFILE"
cat "$ENVFILE"
