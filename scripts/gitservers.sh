#!/usr/bin/env bash
# scripts/gitservers.sh - real git servers for lockstep's hook tests (tests/git_servers.rs).
#
# Installs from Debian's packages what three kinds of git server need, and nothing keeps
# running afterwards: each test starts its own server on a free 127.0.0.1 port, with its own
# repositories and configs. The servers:
#   - `git daemon` (git's own; no identity, so the anonymous case);
#   - smart HTTP: `git http-backend` as a CGI program behind lighttpd (mod_cgi), with basic
#     auth (mod_auth, mod_authn_file), so that the hooks see `REMOTE_USER`;
#   - gitolite3 behind a local sshd (`openssh-server`), for `GL_USER`.
# It also makes the account the servers run as, `lockstep-git` (no password, no login shell
# needed by the tests other than gitolite's `command=` keys), so that hooks run as a git
# server's account, not as root. `start` checks each binary (its version, `sshd -t` on a
# minimal config) and writes the env file the tests read. Idempotent; ~0.3 s once installed.
#
# Usage:  scripts/gitservers.sh [start|status|env]   (default: start; installing needs root)
#   start   install if needed, check the binaries, write the env file, print it
#   status  say whether the env file names working binaries (exit 0) or not (exit 1)
#   env     print the path of the env file
#
# Environment (all optional):
#   GITSERVERS_STATE_DIR=${TMPDIR:-/tmp}/lockstep-gitservers   (env file)
#
# The env file holds KEY=value lines: GIT_DAEMON_BIN, GIT_HTTP_BACKEND_BIN, LIGHTTPD_BIN,
# LIGHTTPD_MODULES (lighttpd's module folder), SSHD_BIN, SSH_KEYGEN_BIN, GITOLITE_BIN,
# GITOLITE_SHELL_BIN, GIT_SERVER_USER (the account the servers run as). Load it with
#   set -a; . "$(scripts/gitservers.sh env)"; set +a
set -euo pipefail

STATE="${GITSERVERS_STATE_DIR:-${TMPDIR:-/tmp}/lockstep-gitservers}"
ENVFILE="$STATE/env"
ACCOUNT=lockstep-git

log() { printf '[gitservers %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { echo "scripts/gitservers.sh: $*" >&2; exit 1; }
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

KEYS=(GIT_DAEMON_BIN GIT_HTTP_BACKEND_BIN LIGHTTPD_BIN SSHD_BIN SSH_KEYGEN_BIN GITOLITE_BIN GITOLITE_SHELL_BIN)
env_ok() {  # the env file exists and names executables
  [ -f "$ENVFILE" ] || return 1
  local bin
  for key in "${KEYS[@]}"; do
    bin=$(sed -n "s/^$key=//p" "$ENVFILE")
    [ -n "$bin" ] && [ -x "$bin" ] || return 1
  done
  id -u "$ACCOUNT" >/dev/null 2>&1
}

case "${1:-start}" in
  status)
    if env_ok; then echo "ready: $(tr '\n' ' ' < "$ENVFILE")"; exit 0; fi
    echo "not ready (run scripts/gitservers.sh start)"; exit 1 ;;
  env) echo "$ENVFILE"; exit 0 ;;
  start) ;;
  *) echo "usage: $0 [start|status|env]" >&2; exit 2 ;;
esac

T0=$(date +%s%N)
if ! mkdir -p "$STATE" 2>/dev/null || [ ! -w "$STATE" ]; then
  die "cannot write to \`$STATE\`; set GITSERVERS_STATE_DIR to a folder you can write to"
fi
exec 9>"$STATE/lock"
flock 9

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

PACKAGES=(git lighttpd openssh-server openssh-client gitolite3)
if installed "${PACKAGES[@]}"; then
  log "${PACKAGES[*]} already installed"
else
  [ "$(id -u)" = 0 ] || die "start: run it as root once to install ${PACKAGES[*]} (later runs need no root)"
  log "installing ${PACKAGES[*]}"
  for p in "${PACKAGES[@]}"; do
    if ! apt-cache policy "$p" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
      apt-get -o DPkg::Lock::Timeout=600 update -q >&2
      break
    fi
  done
  # gitolite3's package asks for an admin key; left empty, it sets nothing up (each test
  # sets up its own gitolite).
  echo "gitolite3 gitolite3/adminkey string" | debconf-set-selections
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
    --no-install-recommends "${PACKAGES[@]}" >&2 \
    || die "installing ${PACKAGES[*]} failed (see apt's output above); fix apt, then run this again"
  stop_package_service lighttpd
  stop_package_service ssh
  log "installed in $(ms_since "$T0") ms"
fi

# 2. The account the servers run as: hooks run as it, as on a real server. sshd refuses a key
#    login to an account whose password is locked (`!`), so its password is `*` (none).
if ! id -u "$ACCOUNT" >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || die "start: run it as root once to create the \`$ACCOUNT\` account"
  useradd --system --user-group --create-home --home-dir "/var/lib/$ACCOUNT" \
    --shell /bin/sh "$ACCOUNT"
  usermod -p '*' "$ACCOUNT"
  log "made the account $ACCOUNT"
fi

# 3. The binaries.
exec_path=$(git --exec-path)
GIT_DAEMON_BIN="$exec_path/git-daemon"
GIT_HTTP_BACKEND_BIN="$exec_path/git-http-backend"
LIGHTTPD_BIN=$(command -v lighttpd || echo /usr/sbin/lighttpd)
LIGHTTPD_MODULES=/usr/lib/lighttpd
SSHD_BIN=/usr/sbin/sshd
SSH_KEYGEN_BIN=$(command -v ssh-keygen || echo /usr/bin/ssh-keygen)
GITOLITE_BIN=$(command -v gitolite || echo /usr/bin/gitolite)
GITOLITE_SHELL_BIN=/usr/share/gitolite3/gitolite-shell
for key in "${KEYS[@]}"; do
  [ -x "${!key}" ] || die "$key: \`${!key}\` is missing or not executable; reinstall: apt-get install --reinstall ${PACKAGES[*]}"
done
[ -f "$LIGHTTPD_MODULES/mod_authn_file.so" ] && [ -f "$LIGHTTPD_MODULES/mod_cgi.so" ] \
  || die "lighttpd's mod_cgi or mod_authn_file is missing from $LIGHTTPD_MODULES; reinstall lighttpd"
log "git $(git --version | cut -d' ' -f3), $("$LIGHTTPD_BIN" -v | head -1 | cut -d' ' -f1)," \
  "$("$SSHD_BIN" -V 2>&1 | head -1 | cut -d, -f1), gitolite $(dpkg-query -W -f='${Version}' gitolite3)"

# 4. What the tests do, minus the servers' ports: sshd accepts a minimal config of ours.
CHECK=$(mktemp -d "$STATE/check.XXXXXX")
trap 'rm -rf "$CHECK"' EXIT
"$SSH_KEYGEN_BIN" -q -t ed25519 -N '' -f "$CHECK/host" >/dev/null
mkdir -p /run/sshd 2>/dev/null || true
cat > "$CHECK/sshd_config" <<EOF
ListenAddress 127.0.0.1:1
HostKey $CHECK/host
PidFile none
UsePAM no
StrictModes no
AuthorizedKeysFile $CHECK/authorized_keys
EOF
"$SSHD_BIN" -t -f "$CHECK/sshd_config" 2>"$CHECK/sshd.err" \
  || { cat "$CHECK/sshd.err" >&2; die "sshd rejects a minimal config (above)"; }

{
  for key in "${KEYS[@]}"; do echo "$key=${!key}"; done
  echo "LIGHTTPD_MODULES=$LIGHTTPD_MODULES"
  echo "GIT_SERVER_USER=$ACCOUNT"
} > "$ENVFILE.tmp"
mv "$ENVFILE.tmp" "$ENVFILE"
log "ready in $(ms_since "$T0") ms; env file $ENVFILE"
cat "$ENVFILE"
