# {{ module }}: the application and the values shared by the scripts (jinja2, included by each).
# Edit the command line: it runs in the foreground as os_user, in its own session; it must listen
# on the VIP (bind) and keep its data in the replicated directory (top).
user={{ os_user | quote }}
top={{ dirs[0] | quote }}
run_dir={{ run_dir | quote }}
pidfile="$run_dir/app.pid"
bind={{ (vip_ip or "127.0.0.1") | quote }}
command=({{ python | quote }} -m http.server --bind "$bind" --directory "$top" {{ port }})
# ready: the application answers (here: an HTTP request); start_prim returns only then.
ready() { curl -fsS -m 2 -o /dev/null "http://$bind:{{ port }}/" 2>/dev/null; }
# app: the pid in the pid file if it is still the application (pids are reused after a crash).
app() {
  local pid
  pid=$(cat "$pidfile" 2>/dev/null || true)
  alive "$pid" && grep -qaF {{ program | quote }} "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}
