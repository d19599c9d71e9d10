# {{ module }}: values shared by the scripts (jinja2, included by each; rendered for {{ node }}).
user={{ os_user | quote }}
top={{ dirs[0] | quote }}
docroot={{ (dirs[0] ~ "/" ~ docroot_subdir) | quote }}
server_dir={{ server_dir | quote }}
conf="$server_dir/nginx.conf"
pidfile="$server_dir/nginx.pid"
url="http://{{ vip_ip or '127.0.0.1' }}:{{ port }}/hamirror-health"
ready() { curl -fsS -m 2 -o /dev/null "$url" 2>/dev/null; }
# master: the pid in the pid file if it is an nginx started with this module's configuration.
master() {
  local pid
  pid=$(cat "$pidfile" 2>/dev/null || true)
  alive "$pid" && grep -qaF -- "$conf" "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}
