#!/usr/bin/env bash
# The admin guide's quick start (docs/admin-guide.md, §0) on two fresh Debian 12 servers, end to end:
# two lab nodes db1 (198.18.0.1) and db2 (198.18.0.2), each a debootstrap'd Debian 12 root
# filesystem booted by systemd-nspawn in its own network namespace on a lab switch, the release
# (dist/: bash scripts/release.sh) installed with the guide's own §1 commands (read from the guide),
# PostgreSQL protected with the guide's steps, and the guide's acceptance test: swap and back,
# failover (db1 powered off), failback (db1 back, resynced, swapped back), with a writer through the
# VIP from a client host the whole time: every acknowledged commit must be there at the end.
#
#   sudo bash scripts/acceptance.sh            # ~10 min, downloads ~250 MB the first time
#   sudo bash scripts/acceptance.sh --build    # bash scripts/release.sh --no-tests first
#   sudo bash scripts/acceptance.sh --down     # remove what a run left (the script does it anyway)
#
# Root, Debian 12 host with debootstrap and systemd-container (apt-get install -y debootstrap
# systemd-container) and the PostgreSQL client (psql), network access from the host (apt, PyPI).
# Work directory: $HAMIRROR_ACCEPT_DIR (default /var/tmp/hamirror-accept); the debootstrap'd base
# is kept there and reused, each run copies it afresh for both nodes (idempotent). Every namespace,
# container, mount, loop device and cgroup a run made is removed at the end, also on failure or
# Ctrl-C; a run first removes what an earlier, killed run left. Not in the default test suite:
# tests/test_acceptance.py runs it with HAMIRROR_ACCEPTANCE=1.
#
# The guide's commands run unchanged inside the nodes (§1's block is read from the guide), except
# where a container on one machine cannot do what a server does; each is said as it runs:
#   - §0 step 3, the data volume: no /dev/sdb in a container, and systemd in a container ignores
#     fstab's device lines; the host makes the ext4 volume (an image file) and mounts it on
#     /srv/hamirror-postgresql at each boot of the node, in the node's own mount namespace.
#   - scp (§0 steps 4 and 6, §2): no ssh between the nodes; the files are copied between the two
#     root filesystems by the host (cp -p, cp -a), the same files with the same modes.
#   - the power switch (step 10): power off cuts the node's cable (its switch port removed, so
#     nothing it sends while dying reaches the peer), then SIGKILLs its whole container (every
#     process, its mounts); its page cache is the host's, so writes the node
#     had not made durable are not lost as they would be in a real power loss (docs/lab.md's
#     power-loss emulation is not used here). Power on is a boot of the same root filesystem.
#   - install steps (§1, PostgreSQL) run in the node's root filesystem, not booted, on the host's
#     network (the lab's namespaces have no route out); a TLS proxy's CA that the host trusts
#     (/usr/local/share/ca-certificates) is given to the nodes first, as a site would.
# No fence script nor witness (§0 step 5): config check's warning is expected; the test has no
# partition.
set -euo pipefail
shopt -s inherit_errexit
SELF=$(readlink -f "$0")
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=${HAMIRROR_ACCEPT_DIR:-/var/tmp/hamirror-accept}
RUN=$WORK/run
BASE=$WORK/base
PREFIX=hmacc
NODES=(db1 db2)
declare -A ADDR=([db1]=198.18.0.1 [db2]=198.18.0.2 [client]=198.18.0.200)
VIP=198.18.0.100
NIC=enp1s0                      # a Debian 12 name (the guide: not eth0); found by the guide's command
PGPASS=choose-one
CGROUP=hamirror-accept
PATH_IN=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
T0=$(date +%s)

say() { printf '[%4ds] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
die() { say "FAILED: $*"; exit 1; }

# ---------------------------------------------------------------------------------- lab plumbing
netns_up() {            # netns_up HOST: its namespace, plugged into the switch, with its address
  local h=$1 ns=$PREFIX-$1 port=p-$1
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$PREFIX-switch" link add "$port" type veth peer name "$NIC" netns "$ns"
  ip -n "$PREFIX-switch" link set "$port" master br0 up
  ip -n "$ns" addr add "${ADDR[$h]}/24" dev "$NIC"
  ip -n "$ns" link set "$NIC" up
}

netns_down() { ip netns del "$PREFIX-$1" 2>/dev/null || true; }

container_pid() {       # container_pid NODE: the PID (host's view) of the node's systemd, or nothing
  local outer inner
  outer=$(cat "$RUN/$1.nspawn" 2>/dev/null) || return 0
  [ -d "/proc/$outer" ] || return 0
  inner=$(ps -e -o pid=,ppid=,comm= | awk -v p="$outer" '$2==p && $3=="systemd-nspawn"{print $1}')
  ps -e -o pid=,ppid=,comm= | awk -v p="${inner:-$outer}" '$2==p && $3=="systemd"{print $1}'
}

# on NODE CMD...: run CMD inside the booted node (all its namespaces), with a server's environment.
on() {
  local node=$1 pid; shift
  pid=$(container_pid "$node")
  [ -n "$pid" ] || die "$node is not running"
  nsenter -t "$pid" -a -- env -i PATH=$PATH_IN HOME=/root LANG=C.UTF-8 TERM=dumb "$@"
}

# offline NODE CMD...: run CMD in the node's root filesystem, not booted, on the host's network
# (what a server's install steps need: apt and PyPI; the lab's namespaces have no route out).
offline() {
  local node=$1; shift
  ( in_own_cgroup "$node-install" systemd-nspawn -q -D "$WORK/$node/root" --register=no --keep-unit -M "$node-install" \
    --bind="$WORK/cache/apt:/var/cache/apt/archives" --bind="$WORK/cache/pip:/root/.cache/pip" \
    --bind-ro="$REPO/dist:/root/release" --chdir=/root/release -E LANG=C.UTF-8 -E DEBIAN_FRONTEND=noninteractive \
    "$@" </dev/null ) 2> >(grep -v 'Attempted to remove disk file system under' >&2)
}

# The host is not run by systemd here (no bus): nspawn is told to keep its cgroup (--keep-unit),
# which is made per node so that the two containers' systemd trees do not meet.
in_own_cgroup() {       # in_own_cgroup NAME CMD...: exec CMD in a cgroup of its own (every hierarchy)
  local name=$1 h; shift
  for h in /sys/fs/cgroup/unified /sys/fs/cgroup/systemd /sys/fs/cgroup; do
    [ -e "$h/cgroup.procs" ] || continue
    mkdir -p "$h/$CGROUP/$name"
    echo "$BASHPID" >"$h/$CGROUP/$name/cgroup.procs"
  done
  exec "$@"
}

boot() {                # boot NODE: power on: the NIC comes up, systemd boots, wait for it
  local node=$1 pid state i
  netns_up "$node"
  ( in_own_cgroup "$node" unshare -m --propagation private bash "$SELF" --boot-node "$node" \
      </dev/null >>"$WORK/$node/console.log" 2>&1 ) &
  echo $! >"$RUN/$node.nspawn"
  for i in $(seq 1 120); do
    pid=$(container_pid "$node")
    if [ -n "$pid" ]; then
      state=$(nsenter -t "$pid" -a -- systemctl is-system-running 2>/dev/null || true)
      case $state in
        running|degraded)
          nsenter -t "$pid" -a -- grep -q ' /srv/hamirror-postgresql .* - ext4 ' /proc/1/mountinfo \
            || die "$node: no ext4 volume on /srv/hamirror-postgresql"
          say "$node booted ($state), its volume on /srv/hamirror-postgresql"
          return 0 ;;
      esac
    fi
    sleep 1
  done
  die "$node did not boot in 120 s (state ${state:-none}; $WORK/$node/console.log)"
}

power_off() {           # power_off NODE: its cable cut first (no FIN nor RST of its dying sockets
  local node=$1 pid outer i   # reaches the peer, as after a real power loss), then SIGKILL of its
  ip -n "$PREFIX-switch" link del "p-$node" 2>/dev/null || true   # systemd: its PID namespace dies
  pid=$(container_pid "$node")
  outer=$(cat "$RUN/$node.nspawn" 2>/dev/null || true)
  [ -z "$pid" ] || kill -KILL "$pid"
  for i in $(seq 1 100); do
    { [ -n "$outer" ] && [ -d "/proc/$outer" ]; } || break
    sleep 0.2
  done
  [ -z "$outer" ] || ! [ -d "/proc/$outer" ] || kill -KILL "$outer" 2>/dev/null || true
  rm -f "$RUN/$node.nspawn"
  netns_down "$node"
}

down() {                # everything a run (this one or a killed one) made, in reverse order
  local node h
  [ -z "${WRITER:-}" ] || kill "$WRITER" 2>/dev/null || true
  for node in "${NODES[@]}"; do power_off "$node"; done
  netns_down client
  netns_down switch
  for node in "${NODES[@]}"; do   # (the volumes' mounts ended with their nodes' mount namespaces)
    losetup -j "$WORK/$node/sdb.img" -O NAME -n 2>/dev/null | xargs -r -n1 losetup -d 2>/dev/null || true
  done
  for h in /sys/fs/cgroup/unified /sys/fs/cgroup/systemd /sys/fs/cgroup; do
    [ -d "$h/$CGROUP" ] && find "$h/$CGROUP" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

# ------------------------------------------------------------------------------------- the run
if [ "${1:-}" = --boot-node ]; then
  # In a mount namespace of its own (boot's unshare): the node's data volume is mounted here only,
  # so it leaves with the node and never shows in the host's (or another lab's) namespaces.
  node=$2
  mount -o loop "$WORK/$node/sdb.img" "$WORK/$node/root/srv/hamirror-postgresql"
  exec setsid systemd-nspawn -q -D "$WORK/$node/root" -b --register=no --keep-unit -M "$node" \
    --network-namespace-path="/run/netns/$PREFIX-$node" --capability=CAP_NET_ADMIN --bind=/dev/fuse \
    --console=passive
fi
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 2; }
for tool in debootstrap systemd-nspawn nsenter losetup psql; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y debootstrap systemd-container postgresql-client)" >&2; exit 2; }
done
mkdir -p "$RUN" "$WORK/cache/apt" "$WORK/cache/pip"
down
case ${1:-} in
  --down) say "down"; exit 0 ;;
  --build) bash scripts/release.sh --no-tests >"$WORK/release.log" 2>&1 || die "release.sh: $WORK/release.log"
           say "release built: $(cd dist && cat SHA256SUMS | awk '{print $2}' | tr '\n' ' ')" ;;
  "") ;;
  *) echo "usage: $0 [--build | --down]" >&2; exit 2 ;;
esac
trap 'exit 143' TERM INT HUP
trap 'rc=$?; down; [ $rc = 0 ] || say "left on failure: $WORK/db*/console.log, $RUN"; exit $rc' EXIT

version=$(python3 -c "import re; print(re.search(r'__version__ = \"([^\"]+)\"', open('hamirror/__init__.py').read())[1])")
wheel=dist/hamirror-$version-cp311-cp311-linux_x86_64.whl
[ -f "$wheel" ] && [ -f "dist/hamirror-$version-constraints.txt" ] && [ -f dist/SHA256SUMS ] \
  || die "no release $version in dist/: bash scripts/release.sh --no-tests (or with the tests) first"

# A bare Debian 12 server: minbase plus what a server installed from Debian's installer has and a
# container needs to boot (systemd, dbus, ps, CA certificates); no Python, no ip: the guide's own
# apt-get line must bring them.
include=systemd,systemd-sysv,dbus,procps,ca-certificates
if [ "$(cat "$BASE/.accept-include" 2>/dev/null)" != "$include" ]; then
  say "debootstrap Debian 12 (minbase + $include) into $BASE"
  rm -rf "$BASE" "$BASE.tmp"
  debootstrap --variant=minbase --include="$include" bookworm "$BASE.tmp" http://deb.debian.org/debian \
    >"$WORK/debootstrap.log" 2>&1 || die "debootstrap failed: $WORK/debootstrap.log"
  echo "$include" >"$BASE.tmp/.accept-include"
  mv "$BASE.tmp" "$BASE"
  say "debootstrap done"
fi

for node in "${NODES[@]}"; do
  rm -rf "$WORK/$node"
  mkdir -p "$WORK/$node"
  cp -a --reflink=auto "$BASE" "$WORK/$node/root"
  echo "$node" >"$WORK/$node/root/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 %s\n%s db1\n%s db2\n' "$node" "${ADDR[db1]}" "${ADDR[db2]}" \
    >"$WORK/$node/root/etc/hosts"
done
# Not a guide step: a site whose Internet access goes through a TLS proxy gives its servers the
# proxy's CA; the host's own local CAs (/usr/local/share/ca-certificates) are copied for that.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  for node in "${NODES[@]}"; do
    cp /usr/local/share/ca-certificates/*.crt "$WORK/$node/root/usr/local/share/ca-certificates/"
    offline "$node" update-ca-certificates >/dev/null
  done
  say "the host's local CAs given to both nodes (a TLS proxy's): $(ls /usr/local/share/ca-certificates)"
fi
say "root filesystems ready: $WORK/db1/root, $WORK/db2/root"

# §1 Install, with the guide's own command block (and §0 step 1: PostgreSQL 15), on each server.
guide_install=$(awk '/^## 1\. Install/{s=1} s && /^```sh$/{c=1; next} c && /^```$/{exit} c' docs/admin-guide.md)
[ -n "$guide_install" ] || die "no \`\`\`sh block in the admin guide's '## 1. Install'"
say "guide §1, run in each root filesystem:"; printf '    %s\n' "$guide_install"
for node in "${NODES[@]}"; do
  offline "$node" /bin/sh -ec "sha256sum -c SHA256SUMS; $guide_install; apt-get install -y postgresql-15" \
    >"$WORK/$node/install.log" 2>&1 || die "$node: install failed: $WORK/$node/install.log"
  say "$node: installed ($(offline "$node" /usr/local/bin/hamirror --version | tr -d '\r'))"
done

# §0 step 3, the data volume: REPLACED. A container has no /dev/sdb, and systemd in a container
# ignores fstab's device lines; the host makes the ext4 volume (an image file) and mounts it where
# the guide's fstab line would, at each boot of the node (--boot-node above).
for node in "${NODES[@]}"; do
  truncate -s 2G "$WORK/$node/sdb.img"
  mkfs.ext4 -q -F "$WORK/$node/sdb.img"
  mkdir -p "$WORK/$node/root/srv/hamirror-postgresql"
done
say "REPLACED §0 step 3: ext4 data volumes made by the host (image files), mounted at each boot (loop)"

ip netns add "$PREFIX-switch"
ip -n "$PREFIX-switch" link set lo up
ip -n "$PREFIX-switch" link add br0 type bridge
ip -n "$PREFIX-switch" link set br0 up
netns_up client
for node in "${NODES[@]}"; do boot "$node"; done
for h in client db1 db2; do
  [ -z "$(ip -n "$PREFIX-$h" route show default)" ] || die "$PREFIX-$h has a default route"
done

# §0 step 2: the distribution's PostgreSQL out of the way.
for node in "${NODES[@]}"; do on "$node" systemctl disable --now postgresql >>"$WORK/$node/steps.log" 2>&1; done
say "step 2: systemctl disable --now postgresql on both"

# §0 step 4 / §2: keys. REPLACED: scp (no ssh in the lab) by a copy between the root filesystems.
for node in "${NODES[@]}"; do on "$node" sh -c 'hamirror keygen --name "$(hostname -s)"'; done
cp -p "$WORK/db1/root/etc/hamirror/keys/db1.key" "$WORK/db2/root/etc/hamirror/keys/"
cp -p "$WORK/db2/root/etc/hamirror/keys/db2.key" "$WORK/db1/root/etc/hamirror/keys/"
on db1 sh -c '(umask 077 && head -c 32 /dev/urandom > /etc/hamirror/cluster.key)'
cp -p "$WORK/db1/root/etc/hamirror/cluster.key" "$WORK/db2/root/etc/hamirror/cluster.key"
say "step 4: keys made, public keys and the cluster key copied (REPLACED scp -p by cp -p)"

# §0 step 5 / §3: the cluster file, the same on both ('node' left out: the host name picks it).
for node in "${NODES[@]}"; do
  cat >"$WORK/$node/root/etc/hamirror/hamirror.toml" <<EOF
[cluster]
name = "accept"

[link]
engine = "stream"

[[nodes]]
name = "db1"
addresses = ["${ADDR[db1]}"]
[[nodes]]
name = "db2"
addresses = ["${ADDR[db2]}"]
EOF
done
say "step 5: /etc/hamirror/hamirror.toml (no fence script nor witness: config check warns)"

# §0 step 6: the module, on db1, with the interface found as the guide says; copied to db2.
nic=$(on db1 ip -o route get "${ADDR[db2]}" | sed -n 's/.* dev \([^ ]*\).*/\1/p')
[ "$nic" = "$NIC" ] || die "ip -o route get found interface '$nic', not $NIC"
on db1 hamirror module new postgresql --template postgresql --directory /srv/hamirror-postgresql \
  --vip "$VIP/24" --interface "$nic" --default-primary db1
grep -q "^host .* 198\.18\.0\.0/24 " "$WORK/db1/root/etc/hamirror/modules/postgresql/pg_hba.conf" \
  || die "pg_hba.conf does not let the VIP's network in"
cp -a "$WORK/db1/root/etc/hamirror/modules" "$WORK/db2/root/etc/hamirror/"
for node in "${NODES[@]}"; do
  on "$node" hamirror module check postgresql || die "$node: module check"
  on "$node" hamirror config check || die "$node: config check"
done
say "step 6: module new postgresql (interface $nic), copied to db2 (REPLACED scp -rp by cp -a); checks OK"

# §0 step 7, the firewall, with exactly the ports the guide lists: from the peer UDP 7401 and TCP
# 7420, from clients TCP 5432 on the VIP only; everything else that comes in is dropped. Debian's
# nftables unit loads it at every boot.
for node in "${NODES[@]}"; do
  peer=db1; [ "$node" = db1 ] && peer=db2
  cat >"$WORK/$node/root/etc/nftables.conf" <<EOF
#!/usr/sbin/nft -f
flush ruleset
table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		iif lo accept
		ct state established,related accept
		ip saddr ${ADDR[$peer]} udp dport 7401 accept comment "heartbeats"
		ip saddr ${ADDR[$peer]} tcp dport 7420 accept comment "replication_port of postgresql"
		ip daddr $VIP tcp dport 5432 accept comment "clients, on the VIP only"
		counter comment "dropped"
	}
}
EOF
  on "$node" systemctl enable --now nftables >>"$WORK/$node/steps.log" 2>&1
done
say "step 7: firewall (nftables, policy drop) with the guide's ports only, on both"

# §0 step 8: start.
for node in "${NODES[@]}"; do on "$node" systemctl enable --now hamirror; done
say "step 8: systemctl enable --now hamirror on both"

module_state() {        # module_state NODE: "STATE UPTODATE" of postgresql on NODE, or "? ?"
  on "$1" hamirror status --json 2>/dev/null | python3 -c '
import json, sys
m = [m for m in json.load(sys.stdin)["modules"] if m["name"] == "postgresql"][0]
print(m["state"], "yes" if m["uptodate"] else "no")' 2>/dev/null || echo "? ?"
}

wait_for() {            # wait_for SECONDS WHAT NODE "STATE UPTODATE" [NODE "STATE UPTODATE"]
  local limit=$1 what=$2 i ok got s j; shift 2
  local args=("$@")
  for i in $(seq 1 "$limit"); do
    ok=yes; got=""
    for ((j = 0; j < ${#args[@]}; j += 2)); do
      s=$(module_state "${args[j]}")
      got+="${args[j]}: $s; "
      [[ "$s" == ${args[j+1]} ]] || ok=""
    done
    [ -z "$ok" ] || { say "$what after ${i} s ($got)"; return 0; }
    sleep 1
  done
  die "$what not reached in $limit s ($got)"
}

wait_for 300 "db1 PRIM, db2 SECOND up to date" db1 "PRIM *" db2 "SECOND yes"
on db1 hamirror status
grep -q '"mirror": "streaming"' <<<"$(on db1 hamirror status --json)" || die 'db1: no "mirror": "streaming" in status --json'
# The firewall is on: db2's receiver listens on 7420, which only db1 may reach.
! ip netns exec "$PREFIX-client" timeout 3 bash -c "</dev/tcp/${ADDR[db2]}/7420" 2>/dev/null \
  || die "the client reached db2's replication port: the firewall is not on"
say "step 7 holds: the client cannot reach db2's replication port"

# §0 step 9: the login role and its database, on the primary.
on db1 runuser -u postgres -- psql -h /run/hamirror/postgresql -c "CREATE ROLE app LOGIN PASSWORD '$PGPASS'" \
  -c "CREATE DATABASE app OWNER app"
say "step 9: role app and database app created on db1"

# §0 step 10, the acceptance test, with a writer through the VIP from the client host.
client_psql() {
  ip netns exec "$PREFIX-client" env PGPASSWORD=$PGPASS PGCONNECT_TIMEOUT=2 \
    psql -X -qAt -v ON_ERROR_STOP=1 "host=$VIP user=app dbname=app" "$@"
}
client_psql -c "CREATE TABLE rows (k int PRIMARY KEY, at timestamptz DEFAULT now())"
ACKED=$WORK/acked.txt
: >"$ACKED"
writer() {              # one INSERT a commit; a key is acknowledged when psql exited 0
  local k=0
  while :; do
    k=$((k + 1))
    if client_psql -c "INSERT INTO rows (k) VALUES ($k)" >/dev/null 2>&1; then echo "$k $(date +%s.%N)" >>"$ACKED"; fi
    sleep 0.05
  done
}
writer & WRITER=$!
sleep 5

check_rows() {          # check_rows WHEN: every commit acknowledged so far is in the table (via the VIP)
  local missing have acked=$WORK/acked.snapshot
  cut -d' ' -f1 "$ACKED" | sort -u >"$acked"     # first: the writer goes on meanwhile
  have=$(client_psql -c "SELECT k FROM rows ORDER BY k") || die "$1: cannot read the rows through the VIP"
  missing=$(comm -23 "$acked" <(sort -u <<<"$have") | wc -l)
  say "$1: $(wc -l <"$acked") commits acknowledged, $(wc -l <<<"$have") rows, $missing acknowledged missing"
  [ "$missing" = 0 ] || die "$1: $missing acknowledged commits lost: $(comm -23 "$acked" <(sort -u <<<"$have") | head -5 | xargs)"
}

check_rows "before the swap"
on db1 hamirror swap postgresql
wait_for 120 "swap: db2 PRIM, db1 SECOND" db2 "PRIM *" db1 "SECOND yes"
sleep 3; check_rows "after the swap"
on db2 hamirror swap postgresql
wait_for 120 "swap back: db1 PRIM, db2 SECOND" db1 "PRIM *" db2 "SECOND yes"
sleep 3; check_rows "after the swap back"

say "power off db1 (its cable cut, then SIGKILL of its whole container)"
t=$(date +%s)
power_off db1
wait_for 60 "failover: db2 ALONE" db2 "ALONE *"
say "db2 ALONE seen $(( $(date +%s) - t )) s after the power-off (status polled every second)"
sleep 3; check_rows "after the failover"

say "power on db1"
boot db1
wait_for 300 "db1 back: db2 PRIM, db1 SECOND up to date" db2 "PRIM *" db1 "SECOND yes"
on db1 hamirror swap postgresql
wait_for 120 "failback: db1 PRIM, db2 SECOND" db1 "PRIM *" db2 "SECOND yes"
sleep 3
kill "$WRITER"; wait "$WRITER" 2>/dev/null || true; WRITER=""
check_rows "at the end"
say "longest time between two acknowledged commits: $(awk 'NR > 1 && $2 - t > g {g = $2 - t} {t = $2} END {printf "%.1f s", g}' "$ACKED") (swaps, failover, failback)"
on db1 hamirror verify postgresql || die "hamirror verify: the copies differ (exit $?)"
on db1 hamirror events postgresql | tail -n 25
for node in "${NODES[@]}"; do      # step 10: "hamirror status --json shows no warning"
  warnings=$(on "$node" hamirror status --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
print("; ".join([w for m in d["modules"] for w in m.get("warnings", [])] + [m["error"] for m in d["modules"] if m.get("error")]))')
  [ -z "$warnings" ] || die "$node: status --json has warnings or errors: $warnings"
done
say "no warning nor error in status --json on db1 and db2"
for node in "${NODES[@]}"; do
  say "$node: the firewall dropped $(on "$node" nft list chain inet filter input | sed -n 's/.*counter packets \([0-9]*\) .*dropped.*/\1/p') packet(s)"
done
on db1 hamirror status
say "PASSED: failover, failback, swap; $(wc -l <"$ACKED") acknowledged commits, 0 lost"
