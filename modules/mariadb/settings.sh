# {{ module }}: values shared by the scripts (jinja2, included by each; rendered for {{ node }}).
user={{ os_user | quote }}
top={{ dirs[0] | quote }}
datadir={{ (dirs[0] ~ "/" ~ datadir_subdir) | quote }}
socket="{{ server_dir }}/mysqld.sock"
pidfile="{{ server_dir }}/mariadbd.pid"   # written by the server, as os_user
server_log="{{ server_dir }}/mariadb.log"
cnf={{ (mariadb_cnf if mariadb_cnf.startswith("/") else module_dir ~ "/" ~ mariadb_cnf) | quote }}
# ready: the server answers a query through its socket (root authenticates by unix_socket).
ready() { mariadb --socket="$socket" -N -B -e 'SELECT 1' >/dev/null 2>&1; }
# server: the pid in the pid file if it is a mariadbd of this datadir on this node.
server() {
  local pid
  pid=$(cat "$pidfile" 2>/dev/null || true)
  runs_in "$pid" mariadbd "$datadir" && echo "$pid"
}
