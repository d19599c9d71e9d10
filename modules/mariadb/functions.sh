# Shell helpers of this module, shared by its scripts and its checker (made by 'hamirror module new').
# The scripts include this file with jinja2 (so it must hold no jinja2 syntax); the checker,
# which runs as it is, sources it. Plain bash, no side effects until a function is called.

# log MESSAGE: one line in the module's scripts.log (the agent appends the script's output there).
log() { echo "$(date '+%F %T') ${HAMIRROR_MODULE:-module} ${SCRIPT_NAME:-script}: $*"; }

# alive PID: the process exists and is not a zombie (a zombie is dead; its parent reaps it).
alive() {
  local stat
  [ -n "$1" ] && stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat:0:1}" != Z ]
}

# runs_in PID PROGRAM DIR: PID is PROGRAM (by executable name) working in DIR, in this node's mount
# namespace. Servers chdir to their data directory; a pid file copied from the other node, or a
# reused pid, names some other process and fails this test. DIR is taken as written when it cannot
# be resolved (a dead mount: ENOTCONN), so a server is still found on a directory nobody can reach.
runs_in() {
  local dir
  alive "$1" || return 1
  [ "$(readlink "/proc/$1/ns/mnt" 2>/dev/null)" = "$(readlink /proc/self/ns/mnt)" ] || return 1
  [ "$(basename "$(readlink "/proc/$1/exe" 2>/dev/null)")" = "$2" ] || return 1
  dir=$(readlink -f -- "$3" 2>/dev/null || true)
  [ "$(readlink "/proc/$1/cwd" 2>/dev/null)" = "${dir:-$3}" ]
}

# wait_until SECONDS COMMAND...: run COMMAND until it succeeds; fails after SECONDS.
wait_until() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# gone PID: the process has ended.
gone() { ! alive "$1"; }

# reachable DIR: DIR's filesystem answers now (statfs always asks it, where a stat may be served
# from the kernel's cache). False on a dead mount (ENOTCONN); bounded on a hung one. A stop_prim
# that cannot reach the data directory has nothing to flush: it stops the server at once.
reachable() { timeout -s KILL 5 stat -f -- "$1" >/dev/null 2>&1; }

# kill_tree PID: SIGKILL the process and its children (the last step of a bounded stop).
kill_tree() {
  local children
  children=$(pgrep -P "$1" 2>/dev/null || true)
  kill -KILL "$1" $children 2>/dev/null || true
}

# own_tree USER DIR: DIR and what it holds belong to USER. User ids may differ between the two
# servers; a data directory replicated from the other one is re-owned here (through the mirror).
own_tree() {
  local owner
  owner=$(stat -c %U "$2")
  if [ "$owner" != "$1" ]; then
    log "$2 belongs to $owner, not $1: chown -R (give $1 the same uid on both servers to avoid this)"
    chown -R "$1:" "$2"
  fi
}

# disable_distro_service UNIT: the distribution's unit must never start this server at boot,
# outside the cluster: disabled, stopped and masked. Nothing to do without systemd (the lab).
disable_distro_service() {
  [ -n "$1" ] && [ -d /run/systemd/system ] || return 0
  if [ "$(systemctl is-enabled "$1" 2>/dev/null)" != masked ]; then
    log "disabling and masking $1: only hamirror starts this server"
    systemctl disable --now "$1" >/dev/null 2>&1 || true
    systemctl mask "$1" >/dev/null 2>&1 || true
  fi
}

# module_vars KEY...: shell assignments KEY=VALUE of the module's [vars], read from the module.toml
# next to the running script (for the checker, which runs without the agent's rendering).
module_vars() {
  "${HAMIRROR_PYTHON:-python3}" - "$(dirname "$(readlink -f "$0")")/module.toml" "$@" <<'PY'
import shlex, sys, tomllib
with open(sys.argv[1], "rb") as stream:
    doc = tomllib.load(stream)
values = dict(doc.get("vars", {}))
values["vip_ip"] = doc.get("vip", {}).get("address", "").split("/")[0]
for key in sys.argv[2:]:
    print(f"{key}={shlex.quote(str(values[key]))}")
PY
}
