# shellcheck shell=sh
# Sourced by the guest's init, its services, the control channel and the health CGI.
# busybox ash: keep it POSIX sh plus `local`; avoid forks on hot paths (TCG makes them slow).

PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
RUN=/run/shadowvm
LIB=/usr/lib/shadowvm
DATA=/data
DATA_DEV=/dev/vda
DATA_MOUNT_OPTS=errors=remount-ro
RECORDS=$DATA/records.log
SYNCED=$DATA/synced
STATE_DIR=/state
STATE_BLOB=$STATE_DIR/blob
PORT_NAME=org.shadowvm.guest.0

[ -r "$RUN/knobs" ] && . "$RUN/knobs"

# knob NAME DEFAULT: the value of shadowvm.NAME=... from the kernel command line, else DEFAULT.
# (init writes KNOB_name='value' lines to $RUN/knobs; values are validated there.)
knob() {
  eval "_kv=\${KNOB_$1:-}"
  if [ -n "$_kv" ]; then echo "$_kv"; else echo "$2"; fi
}

# is_uint VALUE: true when VALUE is a non-empty string of decimal digits.
is_uint() {
  case "$1" in '' | *[!0-9]*) return 1 ;; *) return 0 ;; esac
}

# --- services ----------------------------------------------------------------------------------
# Service names are process names (/proc/PID/comm): httpd, svm-writer, svm-state, svm-leak,
# svm-io, svm-cpu, svm-channel. Short aliases (writer, state, leak, io, cpu, channel) work too.
svc_name() {
  case "$1" in
  httpd | svm-*) echo "$1" ;;
  writer | state | leak | io | cpu | channel) echo "svm-$1" ;;
  *) echo "$1" ;;
  esac
}

# svc_pids NAME: live pids recorded for service NAME (only those whose comm still matches).
svc_pids() {
  local name="$1" out="" pid comm
  [ -r "$RUN/$name.pid" ] || return 0
  for pid in $(cat "$RUN/$name.pid"); do
    comm=""
    [ -r "/proc/$pid/comm" ] && read -r comm <"/proc/$pid/comm" 2>/dev/null
    [ "$comm" = "$name" ] && out="$out $pid"
  done
  echo $out
}

svc_running() {
  local name="$1" pid comm
  [ -r "$RUN/$name.pid" ] || return 1
  read -r pid <"$RUN/$name.pid" 2>/dev/null || return 1
  is_uint "$pid" || return 1
  comm=""
  [ -r "/proc/$pid/comm" ] && read -r comm <"/proc/$pid/comm" 2>/dev/null
  [ "$comm" = "$name" ]
}

# svc_start NAME: start a service unless it runs already. Output goes to $RUN/log/NAME.log.
svc_start() {
  local name log n i
  name=$(svc_name "$1")
  log="$RUN/log/$name.log"
  svc_running "$name" && return 0
  case "$name" in
  httpd)
    httpd -f -p 80 -h /www >>"$log" 2>&1 &
    echo $! >"$RUN/httpd.pid"
    ;;
  svm-writer | svm-state | svm-leak | svm-io | svm-channel)
    "/usr/sbin/$name" >>"$log" 2>&1 &
    echo $! >"$RUN/$name.pid"
    ;;
  svm-cpu)
    n=$(knob cpu_hogs 1)
    is_uint "$n" || n=1
    [ "$n" -gt 0 ] || n=1
    : >"$RUN/svm-cpu.pid"
    i=0
    while [ "$i" -lt "$n" ]; do
      /usr/sbin/svm-cpu >>"$log" 2>&1 &
      echo $! >>"$RUN/svm-cpu.pid"
      i=$((i + 1))
    done
    ;;
  *) return 1 ;;
  esac
  return 0
}

# svc_stop NAME [TIMEOUT_S]: stop a service and wait for it to go. The writer is asked to stop
# between two batches (no torn record); everything else gets SIGTERM, then SIGKILL.
svc_stop() {
  local name deadline pids up
  name=$(svc_name "$1")
  pids=$(svc_pids "$name")
  [ -n "$pids" ] || return 0
  read -r up _ </proc/uptime
  deadline=$((${up%%.*} + ${2:-30}))
  if [ "$name" = svm-writer ]; then
    : >"$RUN/writer.stop"
  else
    kill -TERM $pids 2>/dev/null
  fi
  kill -CONT $pids 2>/dev/null
  while [ -n "$(svc_pids "$name")" ]; do
    read -r up _ </proc/uptime
    if [ "${up%%.*}" -ge "$deadline" ]; then
      kill -KILL $(svc_pids "$name") 2>/dev/null
      sleep 0.2
      break
    fi
    sleep 0.1
  done
  rm -f "$RUN/writer.stop"
  return 0
}

# --- health ------------------------------------------------------------------------------------
# health_json: one JSON object describing the workload (used by /cgi-bin/health and `status`).
health_json() {
  local up seq synced state checked wr st boot_id boot_count load1 k v u memavail status
  read -r up _ </proc/uptime
  seq=0
  [ -r "$RUN/writer.seq" ] && read -r seq <"$RUN/writer.seq" 2>/dev/null
  is_uint "$seq" || seq=0
  synced=0
  [ -r "$SYNCED" ] && read -r synced <"$SYNCED" 2>/dev/null
  is_uint "$synced" || synced=0
  state=pending
  checked=0
  [ -r "$RUN/state.status" ] && read -r state checked <"$RUN/state.status" 2>/dev/null
  is_uint "$checked" || checked=0
  wr=false
  svc_running svm-writer && wr=true
  st=false
  [ "$state" = ok ] && st=true
  boot_id=""
  read -r boot_id </proc/sys/kernel/random/boot_id
  boot_count=0
  [ -r "$RUN/boot_count" ] && read -r boot_count <"$RUN/boot_count"
  is_uint "$boot_count" || boot_count=0
  read -r load1 _ </proc/loadavg
  memavail=0
  while read -r k v u; do
    if [ "$k" = "MemAvailable:" ]; then
      memavail=$v
      break
    fi
  done </proc/meminfo
  status=ok
  if [ "$wr" != true ] || [ "$st" != true ]; then status=degraded; fi
  printf '{"status":"%s","uptime_s":%s,"boot_id":"%s","boot_count":%s,"writer_seq":%s,"writer_synced_seq":%s,"writer_running":%s,"state_ok":%s,"state_checked_uptime_s":%s,"load1":%s,"mem_available_kb":%s}\n' \
    "$status" "$up" "$boot_id" "$boot_count" "$seq" "$synced" "$wr" "$st" "$checked" "$load1" "$memavail"
}
