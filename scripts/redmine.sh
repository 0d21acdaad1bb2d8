#!/usr/bin/env bash
# scripts/redmine.sh - a local Redmine for lockstep's tracker tests.
#
# Installs Debian's packaged Redmine 5 (SQLite backend) if missing and runs it on
# 127.0.0.1:3000 with the REST API on and the fixtures the tests rely on:
#   - project `lockstep` (public), login required (a bad API key gets 401, not anonymous);
#   - statuses "New", "In Progress", "For Delivery", "Resolved", "Closed" all reachable from
#     one another by the Developer role; "Rejected" deliberately unreachable for it (the
#     tests use it to see a transition the workflow refuses);
#   - a non-admin user `ci` (Developer in `lockstep`) whose API key the tests use.
# Idempotent: re-running it skips the work already done and leaves one server running.
#
# Usage:  scripts/redmine.sh [start|stop|status|env]   (default: start; start needs root)
#   start   install if needed, start, apply the fixtures, write the env file, print it
#   stop    stop the server started by `start`
#   status  say whether it runs (exit 0) or not (exit 1)
#   env     print the path of the env file
#
# Environment (all optional):
#   REDMINE_BIND=127.0.0.1  REDMINE_PORT=3000
#   REDMINE_STATE_DIR=${TMPDIR:-/tmp}/lockstep-redmine   (pid file, server log, env file)
#
# The env file holds KEY=value lines: REDMINE_URL, REDMINE_API_KEY (the non-admin `ci`),
# REDMINE_ADMIN_API_KEY, REDMINE_PROJECT, REDMINE_PROJECT_ID. Load it with
#   set -a; . "$(scripts/redmine.sh env)"; set +a
set -euo pipefail

BIND="${REDMINE_BIND:-127.0.0.1}"
PORT="${REDMINE_PORT:-3000}"
STATE="${REDMINE_STATE_DIR:-${TMPDIR:-/tmp}/lockstep-redmine}"
INSTANCE=default
APP=/usr/share/redmine
DBYML=/etc/redmine/$INSTANCE/database.yml
PIDFILE="$STATE/server.pid"
LOG="$STATE/server.log"
ENVFILE="$STATE/env"
URL="http://$BIND:$PORT"

log() { printf '[redmine %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# Runs a command in the Redmine app folder as www-data, as the package's postinst does.
as_redmine() {
  (cd "$APP" && setpriv --reuid=www-data --regid=www-data --init-groups \
     env HOME=/tmp REDMINE_INSTANCE=$INSTANCE RAILS_ENV=production "$@")
}

server_pid() {  # prints the pid when our server is alive
  [ -f "$PIDFILE" ] || return 1
  local pid; pid=$(cat "$PIDFILE")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q rackup "/proc/$pid/cmdline" 2>/dev/null \
    && echo "$pid"
}

stop_server() {
  local pid
  if pid=$(server_pid); then
    log "stopping server pid $pid"
    kill "$pid"
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      # a zombie (no parent left to reap it) is already dead
      [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ] && break
      sleep 0.1
    done
  else
    log "server not running"
  fi
  rm -f "$PIDFILE"
}

case "${1:-start}" in
  stop) stop_server; exit 0 ;;
  status)
    if pid=$(server_pid); then echo "running pid $pid at $URL"; exit 0; else echo "not running"; exit 1; fi ;;
  env) echo "$ENVFILE"; exit 0 ;;
  start) ;;
  *) echo "usage: $0 [start|stop|status|env]" >&2; exit 2 ;;
esac

[ "$(id -u)" = 0 ] || { echo "scripts/redmine.sh start: run it as root (it installs packages and runs Redmine as www-data)" >&2; exit 1; }
mkdir -p "$STATE"
T0=$(date +%s%N)

# 1. Install. dbconfig-common creates the SQLite database, migrates it and loads the
#    default data (trackers, statuses, roles, workflows) without questions.
installed() { [ "$(dpkg-query -W -f='${Status}\n' "$@" 2>/dev/null | grep -c 'install ok installed')" = $# ]; }
if installed redmine redmine-sqlite sqlite3 curl; then
  log "redmine already installed"
else
  log "installing redmine + redmine-sqlite (+ sqlite3, curl)"
  debconf-set-selections <<'DEBCONF'
redmine redmine/current-instances string default
redmine redmine/default-language select en
redmine redmine/instances/default/dbconfig-install boolean true
redmine redmine/instances/default/database-type select sqlite3
redmine redmine/instances/default/default-language select en
DEBCONF
  if ! apt-cache policy redmine 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    apt-get update -q >&2
  fi
  # --no-install-recommends skips passenger: WEBrick serves well enough for tests.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    redmine redmine-sqlite sqlite3 curl >&2
fi
if [ ! -f "$DBYML" ]; then
  # After a purge and a manual deletion of /etc/dbconfig-common/redmine, ucf remembers the
  # file as "deleted by the admin" and dbconfig skips the database setup.
  log "database.yml missing: resetting ucf state and reconfiguring redmine"
  for f in /etc/dbconfig-common/redmine/instances/$INSTANCE.conf "$DBYML"; do
    ucf --purge "$f" || true
    ucfr --purge "redmine/instances/$INSTANCE" "$f" 2>/dev/null || true
  done
  DEBIAN_FRONTEND=noninteractive dpkg-reconfigure -fnoninteractive redmine >&2
fi

# 2. An app server Bundler can see: ruby-webrick is installed as a dependency but is not in
#    Redmine's Gemfile, so Bundler hides it.
if [ ! -f "$APP/Gemfile.local" ] || ! grep -q webrick "$APP/Gemfile.local"; then
  echo "gem 'webrick'" >> "$APP/Gemfile.local"
fi
if ! grep -q '^    webrick ' /var/lib/redmine/Gemfile.lock 2>/dev/null; then
  log "regenerating Gemfile.lock"
  rm -f /var/lib/redmine/Gemfile.lock
  (cd "$APP" && bundle install --local --quiet >&2 2>/dev/null)
  chown www-data:www-data /var/lib/redmine/Gemfile.lock
fi

# 3. SQLite waits on locks instead of answering 500 "database is locked" when tests write
#    concurrently.
if ! grep -q '^  timeout:' "$DBYML"; then
  sed -i 's/^  encoding: utf8$/  encoding: utf8\n  timeout: 10000\n  pool: 16/' "$DBYML"
fi

# 4. Schema and default data (normally already done by the package's postinst).
DB=$(sed -n 's/^  database: //p' "$DBYML")
LATEST=$(ls "$APP/db/migrate" | sort | tail -1 | cut -d_ -f1)
if [ "$(sqlite3 "$DB" "select count(*) from schema_migrations where version='$LATEST'" 2>/dev/null)" != 1 ]; then
  log "migrating the database"
  as_redmine bundle exec rake db:migrate >&2
fi
if [ "$(sqlite3 "$DB" 'select count(*) from issue_statuses' 2>/dev/null || echo 0)" = 0 ]; then
  log "loading the default data"
  as_redmine env REDMINE_LANG=en bundle exec rake redmine:load_default_data >&2
fi

# 5. Start the server in the background while step 6 runs.
if pid=$(server_pid); then
  log "server already running (pid $pid)"
else
  if curl -s -o /dev/null "$URL/"; then
    echo "something else already listens on $URL; stop it or set REDMINE_PORT" >&2; exit 1
  fi
  log "starting the server on $URL"
  # rackup, not `rails server` (which wants to create /usr/share/redmine/tmp). setsid and an
  # exec chain (setpriv, env, bundle exec all exec) make $! the server's own pid.
  cd "$APP"
  setsid setpriv --reuid=www-data --regid=www-data --init-groups \
    env HOME=/tmp REDMINE_INSTANCE=$INSTANCE RAILS_ENV=production \
    bundle exec rackup -E production -s webrick -o "$BIND" -p "$PORT" config.ru \
    </dev/null >"$LOG" 2>&1 &
  echo $! > "$PIDFILE"
  cd - >/dev/null
fi

# 6. Fixtures, all idempotent.
SETUP_RB="$STATE/setup.rb"
cat > "$SETUP_RB" <<'RUBY'
Setting.rest_api_enabled = '1'
# Without it a bad key reads public projects as anonymous (200) instead of getting 401.
Setting.login_required = '1'

admin = User.find_by!(login: 'admin')
admin.must_change_passwd = false
admin.save!

project = Project.find_by(identifier: 'lockstep') || Project.create!(
  name: 'lockstep', identifier: 'lockstep', is_public: true,
  enabled_module_names: %w[issue_tracking], tracker_ids: Tracker.pluck(:id))

IssueStatus.find_or_create_by!(name: 'For Delivery') { |s| s.is_closed = false }
names = ['New', 'In Progress', 'For Delivery', 'Resolved', 'Closed']
reachable = IssueStatus.where(name: names).pluck(:id)
raise "missing statuses: #{names}" unless reachable.size == names.size
rejected = IssueStatus.find_by!(name: 'Rejected')

# A status change without a WorkflowTransition row is silently ignored (204, no change).
developer = Role.find_by!(name: 'Developer')
Tracker.pluck(:id).each do |tracker_id|
  reachable.each do |from|
    reachable.each do |to|
      next if from == to
      WorkflowTransition.find_or_create_by!(role_id: developer.id, tracker_id: tracker_id,
        old_status_id: from, new_status_id: to, author: false, assignee: false)
    end
  end
end
WorkflowTransition.where(role_id: developer.id, new_status_id: rejected.id).delete_all

ci = User.find_by(login: 'ci') || User.new(firstname: 'CI', lastname: 'Bot',
                                             mail: 'ci@example.invalid').tap do |u|
  u.login = 'ci'
  u.password = u.password_confirmation = SecureRandom.hex(16)
  u.must_change_passwd = false
  u.save!
end
unless Member.exists?(user_id: ci.id, project_id: project.id)
  Member.create!(principal: ci, project: project, roles: [developer])
end

puts "REDMINE_API_KEY=#{ci.api_key}"
puts "REDMINE_ADMIN_API_KEY=#{admin.api_key}"
puts "REDMINE_PROJECT=#{project.identifier}"
puts "REDMINE_PROJECT_ID=#{project.id}"
RUBY
chmod 644 "$SETUP_RB"
SETUP_SHA=$(sha256sum < "$SETUP_RB" | cut -d' ' -f1)

# Waits until the server answers (any HTTP status) and prints the status of a request for
# the project with the non-admin key.
api_status() {
  local code=000
  for _ in $(seq 1 1200); do
    server_pid >/dev/null || { echo "the server died; its log:" >&2; tail -50 "$LOG" >&2; exit 1; }
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-Redmine-API-Key: $REDMINE_API_KEY" \
             "$URL/projects/$REDMINE_PROJECT.json" || true)
    case "$code" in 000|502|503) sleep 0.1 ;; *) break ;; esac
  done
  echo "$code"
}

code=none
if [ -f "$ENVFILE" ] && [ "$(cat "$STATE/fixtures.sha" 2>/dev/null)" = "$SETUP_SHA" ]; then
  # shellcheck disable=SC1090
  . "$ENVFILE"
  log "fixtures already applied; waiting for $URL"
  code=$(api_status)
fi
if [ "$code" != 200 ]; then
  log "applying the fixtures (rails runner)"
  FIXTURES=$(as_redmine bundle exec rails runner "$SETUP_RB")
  { echo "REDMINE_URL=$URL"; echo "$FIXTURES"; } > "$ENVFILE.tmp"
  chmod 600 "$ENVFILE.tmp"
  mv "$ENVFILE.tmp" "$ENVFILE"
  echo "$SETUP_SHA" > "$STATE/fixtures.sha"
  # shellcheck disable=SC1090
  . "$ENVFILE"
  # 7. Wait until the API answers the non-admin key (proves server + REST API + key).
  log "waiting for $URL"
  code=$(api_status)
fi
[ "$code" = 200 ] || { echo "the API is not ready (last HTTP $code); log: $LOG" >&2; exit 1; }
pid=$(server_pid)

log "ready in $(( ($(date +%s%N) - T0) / 1000000 )) ms; server pid $pid; env file $ENVFILE"
cat "$ENVFILE"
