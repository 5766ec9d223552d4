# Shared by bin/dev and bin/test: finds or installs Python >= 3.12 (and the venv), PostgreSQL, Redis, RabbitMQ and nginx,
# and starts/stops local PostgreSQL and Redis servers in a folder of their own. No Docker.
# shellcheck shell=bash
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SOCIOMILE_VENV:-$ROOT/.venv}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "root is needed to run: $*"
  fi
}

APT_UPDATED=""
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "please install: $* (no apt-get here)"
  log "installing $* with apt-get"
  if [ -z "$APT_UPDATED" ]; then as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq; APT_UPDATED=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

python_is_recent() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }

# Django 6 needs Python >= 3.12. Debian 12's python3 is 3.11, so also look at pyenv's versions.
find_python() {
  local pyenv_root="${PYENV_ROOT:-}" candidate
  [ -n "$pyenv_root" ] || pyenv_root="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
  for candidate in "${PYTHON:-}" python3.12 python3.13 python3 \
      $(ls -d "$pyenv_root"/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -V); do
    [ -n "$candidate" ] || continue
    if python_is_recent "$candidate"; then command -v "$candidate" 2>/dev/null || echo "$candidate"; return 0; fi
  done
  return 1
}

ensure_venv() {
  local python want stamp
  if [ ! -x "$VENV/bin/python" ] || ! python_is_recent "$VENV/bin/python"; then
    if ! python="$(find_python)"; then
      apt_install python3.12 python3.12-venv 2>/dev/null || true
      python="$(find_python)" || die "Python >= 3.12 not found: set PYTHON=/path/to/python3.12"
    fi
    log "creating $VENV with $python ($("$python" --version))"
    rm -rf "$VENV"
    "$python" -m venv "$VENV"
  fi
  want="$(sha256sum "$ROOT/requirements.txt" | cut -d' ' -f1)"
  stamp="$VENV/.requirements.sha256"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing requirements.txt into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$ROOT/requirements.txt"
    echo "$want" >"$stamp"
  fi
  log "python: $("$VENV/bin/python" --version) in $VENV"
}

find_pg_bindir() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then echo "$dir"; return 0; fi
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return 0; fi
  return 1
}

ensure_postgres() {
  PG_BIN="$(find_pg_bindir)" || { apt_install postgresql; PG_BIN="$(find_pg_bindir)"; } || die "PostgreSQL not found"
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/postgresql --shell /bin/sh postgres
  fi
  log "postgresql: $("$PG_BIN/postgres" --version)"
}

ensure_redis() {
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  command -v redis-server >/dev/null 2>&1 || die "redis-server not found"
  log "redis: $(redis-server --version | cut -d' ' -f3)"
}

# PostgreSQL refuses to run as root: as root, the cluster belongs to the postgres user.
pg_as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# port_is_free PORT: nothing listens on it and no socket holds it (a server binding it now would succeed). Bound on
# every address with SO_REUSEADDR, as the servers bind: a connection of ours left in TIME_WAIT does not count.
port_is_free() {
  "$VENV/bin/python" - "$1" <<'PY'
import socket, sys
with socket.socket() as sock:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("0.0.0.0", int(sys.argv[1])))
    except OSError:
        sys.exit(1)
PY
}

# port_choose RESULT WHAT VARIABLE DEFAULT [fixed]: sets RESULT to the port to serve WHAT on. Given in VARIABLE:
# that one, or a clear stop if it is taken. Else DEFAULT if free; else, unless `fixed`, the next free one of the 100
# above it. Ports chosen by earlier calls count as taken (their servers have not started yet).
PORTS_CHOSEN=" "
port_choose() {
  local result="$1" what="$2" variable="$3" default="$4" mode="${5:-}" given port
  given="${!variable:-}"
  if [ -n "$given" ]; then
    port_is_free "$given" || die "port $given ($what, from $variable) is taken: choose another, e.g. $variable=$(port_next_free "$given") ./bin/dev"
    port="$given"
  elif [[ "$PORTS_CHOSEN" != *" $default "* ]] && port_is_free "$default"; then
    port="$default"
  else
    port="$(port_next_free "$default")"
    [ "$mode" = fixed ] && die "port $default ($what) is taken: choose another, e.g. $variable=${port:-<port>} ./bin/dev"
    [ -n "$port" ] || die "ports $default-$((default + 100)) ($what) are all taken: choose one with $variable=<port> ./bin/dev"
    log "port $default ($what) is taken: using $port (set $variable to choose)"
  fi
  PORTS_CHOSEN="$PORTS_CHOSEN$port "
  printf -v "$result" '%s' "$port"
}

# port_next_free PORT: the first free port of the 100 above PORT not chosen yet, or nothing.
port_next_free() {
  local candidate
  for candidate in $(seq $(($1 + 1)) $(($1 + 100))); do
    if [[ "$PORTS_CHOSEN" != *" $candidate "* ]] && port_is_free "$candidate"; then echo "$candidate"; return 0; fi
  done
}

# dev_still_running DATA_DIR: stops with a clear message when a server of an earlier ./bin/dev on the same data
# still runs (its process was killed, not stopped): a second one on other ports would share its files. A pid file
# counts only while its pid is still that server (a pid left by a crash may have been reused since).
dev_still_running() {
  local dir="$1" entry file program pid
  for entry in postgres/postmaster.pid:postgres redis/redis.pid:redis-server rabbitmq/pid:beam; do
    file="$dir/${entry%%:*}" program="${entry##*:}"
    [ -s "$file" ] || continue
    pid="$(head -n 1 "$file")"
    if [ -n "$pid" ] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q "$program"; then
      die "a server of an earlier ./bin/dev still runs on $dir (pid $pid, $file): stop that ./bin/dev (Ctrl-C), or end pid $pid"
    fi
  done
}

free_port() { "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# pg_start DATA_DIR PORT [EXTRA -c SETTINGS...]: initialises the cluster if needed and starts it on loopback.
pg_start() {
  local data="$1" port="$2"; shift 2
  local settings="-p $port -k $data -c listen_addresses=127.0.0.1"
  local setting
  for setting in "$@"; do settings="$settings -c $setting"; done
  mkdir -p "$data"
  [ "$(id -u)" = 0 ] && chown postgres "$data" && chmod 700 "$data"
  if [ ! -s "$data/PG_VERSION" ]; then
    pg_as_owner "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  fi
  pg_as_owner "$PG_BIN/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 -o "$settings" start >/dev/null \
    || { tail -n 20 "$data/server.log" >&2; die "PostgreSQL did not start (log: $data/server.log)"; }
}

pg_stop() { [ -s "$1/postmaster.pid" ] && pg_as_owner "$PG_BIN/pg_ctl" -D "$1" -m fast -w stop >/dev/null 2>&1 || true; }

# pg_ensure_database PORT NAME: a login role NAME (may create databases: the tests do) owning database NAME.
pg_ensure_database() {
  local port="$1" name="$2" psql=("$PG_BIN/psql" -h 127.0.0.1 -p "$1" -U postgres -d postgres -qAt)
  if [ "$("${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = '$name'")" != 1 ]; then
    "${psql[@]}" -c "CREATE ROLE \"$name\" LOGIN CREATEDB"
  fi
  if [ "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$name'")" != 1 ]; then
    "${psql[@]}" -c "CREATE DATABASE \"$name\" OWNER \"$name\""
  fi
}

# redis_start DIR PORT [persistent]: a Redis server on loopback, daemonized, stopped by its pidfile.
redis_start() {
  local dir="$1" port="$2" mode="${3:-ephemeral}" persistence=(--save "" --appendonly no)
  mkdir -p "$dir"
  [ "$mode" = persistent ] && persistence=(--save "60 1" --appendonly yes)
  redis-server --port "$port" --bind 127.0.0.1 --daemonize yes --dir "$dir" \
    --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" "${persistence[@]}" >/dev/null
  local i
  for i in $(seq 1 50); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "Redis did not start (log: $dir/redis.log)"
}

redis_stop() {
  local dir="$1" pid
  [ -s "$dir/redis.pid" ] || return 0
  pid="$(cat "$dir/redis.pid")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

ensure_rabbitmq() {
  command -v rabbitmq-server >/dev/null 2>&1 || apt_install rabbitmq-server
  command -v rabbitmq-server >/dev/null 2>&1 || die "rabbitmq-server not found"
  log "rabbitmq: $(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null || echo installed)"
}

# nginx, the reverse proxy of the production topology (deploy/nginx.conf.template), which the topology test runs on
# ports of its own (live_stack.py). Debian's package: apt starts no service here, nothing listens on port 80.
ensure_nginx() {
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || apt_install nginx
  { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } || die "nginx not found"
  log "nginx: $( (nginx -v 2>&1 || /usr/sbin/nginx -v 2>&1) | cut -d/ -f2)"
}

# The CLI must use the rabbitmq user's Erlang cookie (the server drops root for that user).
rabbitmq_ctl() {
  if [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1; then
    runuser -u rabbitmq -- env HOME=/var/lib/rabbitmq rabbitmqctl "$@"
  else
    rabbitmqctl "$@"
  fi
}

# rabbitmq_start DIR PORT DIST_PORT [NODE]: a private RabbitMQ node on loopback, with its data, logs and
# config in DIR, under a node name of its own (test runs may overlap: each makes a new name; bin/dev passes
# a fixed one, since the node's data lives under its name). The name is kept in DIR/nodename for
# rabbitmq_stop. epmd (port 4369) is shared by every node and is never stopped here.
rabbitmq_start() {
  local dir="$1" port="$2" dist_port="$3" node="${4:-sociomile-$$-$RANDOM-$(date +%s%N | cut -c10-16)@localhost}"
  mkdir -p "$dir/mnesia" "$dir/log"
  echo "$node" >"$dir/nodename"
  echo '[].' >"$dir/enabled_plugins"
  # consumer_timeout: an unacknowledged delivery older than this closes its channel and is redelivered.
  # The worker puts back a task it parks before this (TENANT_PARK_MAX_SECONDS, kept below it), and the
  # hard time limit of a task is below it too (docs/configuration.md).
  cat >"$dir/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$port
consumer_timeout = ${RABBITMQ_CONSUMER_TIMEOUT_MS:-900000}
log.console = false
log.file.level = warning
CONF
  [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1 && chown -R rabbitmq "$dir"
  RABBITMQ_NODENAME="$node" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$port" \
    RABBITMQ_DIST_PORT="$dist_port" RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" RABBITMQ_CONFIG_FILE="$dir/rabbitmq" \
    RABBITMQ_PID_FILE="$dir/pid" setsid rabbitmq-server >"$dir/server.out" 2>&1 </dev/null &
  echo $! >"$dir/launcher.pid"
  # await_startup fails at once while the node is not registered yet: ask again until it answers.
  local i
  for i in $(seq 1 120); do
    rabbitmq_ctl -n "$node" await_startup --timeout 60 >/dev/null 2>&1 && return 0
    kill -0 "$(cat "$dir/launcher.pid")" 2>/dev/null || break
    sleep 0.5
  done
  tail -n 30 "$dir/server.out" "$dir"/log/*.log >&2 2>/dev/null || true
  die "RabbitMQ did not start (logs: $dir/log)"
}

# rabbitmq_stop DIR: stops the node rabbitmq_start started in DIR (by its own name, then by its own pid).
rabbitmq_stop() {
  local dir="$1" node pid
  [ -s "$dir/nodename" ] || return 0
  node="$(cat "$dir/nodename")"
  rabbitmq_ctl -n "$node" stop >/dev/null 2>&1 || true
  for pid in "$(cat "$dir/pid" 2>/dev/null)" "$(cat "$dir/launcher.pid" 2>/dev/null)"; do
    [ -n "$pid" ] || continue
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -f "$dir/nodename"
}

# stream_serve PORT: the real-time stream's ASGI process (sociomile/asgi.py under uvicorn, docs/stream.md) in the
# foreground; exec, so the caller's pid is uvicorn's own (bin/dev stops it by that pid). A proxy routes
# /api/stream to it and everything else to the WSGI process.
stream_serve() {
  exec "$VENV/bin/uvicorn" sociomile.asgi:application --host 0.0.0.0 --port "$1" --no-access-log \
    --timeout-graceful-shutdown 5
}
