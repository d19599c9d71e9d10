# {{ module }}: values shared by the scripts (jinja2, included by each; rendered for {{ node }}).
pg_bin={{ pg_bin | quote }}
user={{ os_user | quote }}
top={{ dirs[0] | quote }}
pgdata={{ (dirs[0] ~ "/" ~ pgdata_subdir) | quote }}
server_dir={{ server_dir | quote }}
server_log="$server_dir/postgresql.log"
as_user() { runuser -u "$user" -- "$@"; }
# ready: accepting connections and answering a query (not only the postmaster's socket).
ready() {
  as_user "$pg_bin/pg_isready" -q -h "$server_dir" -p {{ port }} -t 2 &&
    as_user "$pg_bin/psql" -X -qAt -h "$server_dir" -p {{ port }} -d postgres -c 'SELECT 1' >/dev/null 2>&1
}
# postmaster: the pid in postmaster.pid if it is a postgres of this data directory on this node.
postmaster() {
  local pid
  pid=$(head -n1 "$pgdata/postmaster.pid" 2>/dev/null || true)
  runs_in "$pid" postgres "$pgdata" && echo "$pid"
}
