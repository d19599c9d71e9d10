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
# postmaster: the pid of this data directory's postgres on this node. Read first from the socket's
# lock file (in server_dir: this node's, not replicated, readable when the data directory is not,
# e.g. on a dead mount), else from postmaster.pid; either must name a postgres working in $pgdata here.
postmaster() {
  local pid file
  for file in "$server_dir/.s.PGSQL.{{ port }}.lock" "$pgdata/postmaster.pid"; do
    pid=$(head -n1 "$file" 2>/dev/null || true)
    if runs_in "$pid" postgres "$pgdata"; then
      echo "$pid"
      return 0
    fi
  done
  return 1
}
