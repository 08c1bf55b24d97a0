#!/usr/bin/env bash
# The Debian package, built and exercised on this machine (as root):
#   1. refuses to run where mqlite is installed already, a user `mqlite` exists, or
#      something listens on port 1883 (it names the port and what holds it);
#   2. builds the amd64 package (packaging/deb/build.sh amd64) and installs it with dpkg -i
#      (apt-get -f install when dependencies are missing);
#   3. checks the user, its directories, `systemd-analyze verify` of the unit (skipped with
#      a note where systemd-analyze is missing), the init script: start (the broker runs as
#      user mqlite and owns /run/mqlite), a QoS 1 round trip with mosquitto_sub and
#      mosquitto_pub on 127.0.0.1:1883, status, stop (process gone, port 1883 free);
#   4. reinstalls the package over itself (an upgrade): local changes in /etc/mqlite stay;
#   5. starts the broker again and removes the package: prerm stopped it, the service is
#      unregistered, the configuration, the user and the store stay; then purges: the user
#      and group, the store, the logs, /run/mqlite, the conffiles and every systemd or rc
#      link are gone.
# The machine is left as it was found: the package is purged, also after a failure or an
# interrupt (what apt-get -f or the tool check installed stays installed).
#
# Output: one line per check on stdout, "package: NAME PASS" or "package: NAME FAIL" (for
# .ci/summary.py's extra file: nothing else goes to stdout); what went wrong, and notes, on
# stderr. Exit status 0 only if every check passed.
#   bash .ci/package.sh
# shellcheck disable=SC2317,SC2016 # functions run through check/wait_for; eval'd strings
set -euo pipefail
cd "$(dirname "$0")/.."
exec 3>&1 1>&2 # fd 3: the check lines; everything else to stderr
export DEBIAN_FRONTEND=noninteractive

port=1883
pidfile=/run/mqlite/mqlite.pid
topic=ci/package
failed=0
installed_by_us=false
pids=() # brokers we started: killed on exit if still alive
sub_pid=
work=$(mktemp -d)

pass() { echo "package: $1 PASS" >&3; }
fail() { # NAME WHAT
  echo "package: $1 FAIL" >&3
  echo "package.sh: FAIL $1: $2"
  failed=1
}
check() { # NAME WHAT COMMAND...: PASS if COMMAND succeeds
  local name=$1 what=$2
  shift 2
  if "$@"; then pass "$name"; else fail "$name" "$what"; fi
}
note() { echo "package.sh: note: $*"; }
wait_for() { # SECONDS COMMAND...: poll every 0.1 s, at most SECONDS
  local n=$(($1 * 10))
  shift
  while [ "$n" -gt 0 ]; do
    "$@" && return 0
    sleep 0.1
    n=$((n - 1))
  done
  "$@"
}
port_taken() { # something listens on $port (any address), or answers on the loopback
  if command -v ss >/dev/null 2>&1; then
    [ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ] && return 0
  fi
  (exec 5<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}
port_free() { ! port_taken; }
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
gone() { ! alive "$1"; }
pkg_status() { dpkg-query -W -f='${Status}' mqlite 2>/dev/null || true; }
broker_pid() { head -n 1 "$pidfile" 2>/dev/null || true; }

cleanup() {
  local rc=$?
  set +e
  [ -n "$sub_pid" ] && kill "$sub_pid" 2>/dev/null
  if $installed_by_us && [ -n "$(pkg_status)" ] && [ "$(pkg_status)" != "unknown ok not-installed" ]; then
    echo "package.sh: cleanup: stopping and purging mqlite"
    [ -x /etc/init.d/mqlite ] && timeout 40 /etc/init.d/mqlite stop >/dev/null 2>&1
    timeout 120 dpkg --purge mqlite >/dev/null 2>&1 || echo "package.sh: cleanup: dpkg --purge mqlite failed"
  fi
  local p
  for p in "${pids[@]}"; do
    if alive "$p" && tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q mqlite; then
      echo "package.sh: cleanup: killing broker $p"
      kill -KILL "$p" 2>/dev/null
    fi
  done
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- 1. preconditions -----------------------------------------------------------------
if [ "$(id -u)" -ne 0 ]; then
  fail preconditions "must run as root (it installs and purges the package with dpkg)"
  exit 1
fi
st=$(pkg_status)
if [ -n "$st" ] && [ "$st" != "unknown ok not-installed" ]; then
  fail preconditions "mqlite is installed already (dpkg status: $st): not touching it"
  exit 1
fi
if getent passwd mqlite >/dev/null || getent group mqlite >/dev/null; then
  fail preconditions "a user or group mqlite exists already (not made by the package): the purge would delete it"
  exit 1
fi
if port_taken; then
  fail port-$port-free "port $port is already taken before the install: $(ss -Hltnp "sport = :$port" 2>/dev/null | tr -s ' ' | head -3)"
  exit 1
fi
pass port-$port-free
missing=()
command -v dpkg-shlibdeps >/dev/null || missing+=(dpkg-dev)
command -v mosquitto_sub >/dev/null || missing+=(mosquitto-clients)
if [ ${#missing[@]} -gt 0 ]; then
  echo "package.sh: installing ${missing[*]}"
  timeout 300 apt-get update -qq || true
  timeout 600 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    { fail tools "apt-get install ${missing[*]} failed"; exit 1; }
fi

# ---- 2. build and install -------------------------------------------------------------
outdir=build-deb-amd64/ci
rm -rf "$outdir"
if deb=$(timeout 900 bash packaging/deb/build.sh amd64 "$outdir" 2>"$work/build.log" | tail -n 1) &&
  [ -f "$deb" ]; then
  pass build
  grep '^==' "$work/build.log" || true
else
  cat "$work/build.log"
  fail build "packaging/deb/build.sh amd64 failed"
  exit 1
fi

installed_by_us=true
if timeout 300 dpkg -i "$deb" </dev/null >"$work/install.log" 2>&1; then
  pass install
else
  note "dpkg -i failed; trying apt-get -f install (missing dependencies?)"
  cat "$work/install.log"
  if timeout 600 apt-get install -f -y -q </dev/null >>"$work/install.log" 2>&1 &&
    [ "$(pkg_status)" = "install ok installed" ]; then
    pass install
  else
    tail -20 "$work/install.log"
    fail install "dpkg -i $deb (and apt-get -f install) failed"
    exit 1
  fi
fi
echo "package.sh: installed $(dpkg-query -W -f='${Package} ${Version} ${Architecture}; Depends: ${Depends}' mqlite)"

# ---- 3. what the postinst made ----------------------------------------------------------
user_ok() {
  local ent
  ent=$(getent passwd mqlite) || { echo "no user mqlite"; return 1; }
  getent group mqlite >/dev/null || { echo "no group mqlite"; return 1; }
  IFS=: read -r _ _ _ _ _ home shell <<<"$ent"
  [ "$home" = /var/lib/mqlite ] || { echo "home is $home"; return 1; }
  case $shell in */nologin | */false) ;; *) echo "login shell $shell"; return 1 ;; esac
  [ "$(id -gn mqlite)" = mqlite ] || { echo "primary group $(id -gn mqlite)"; return 1; }
}
check user "the system user mqlite (home /var/lib/mqlite, no login shell, group mqlite)" user_ok
dir_ok() { # DIR: mqlite:mqlite 750
  local got
  got=$(stat -c '%U:%G %a' "$1" 2>&1)
  [ "$got" = "mqlite:mqlite 750" ] || { echo "$1: $got"; return 1; }
}
check state-dirs "/var/lib/mqlite and /var/log/mqlite owned by mqlite, mode 0750" \
  eval 'dir_ok /var/lib/mqlite && dir_ok /var/log/mqlite'
if [ -d /run/systemd/system ]; then
  note "systemd runs here: the postinst enabled mqlite.service"
elif command -v update-rc.d >/dev/null; then
  check rc-links "update-rc.d made /etc/rc2.d/S??mqlite and /etc/rc0.d/K??mqlite" \
    eval 'ls /etc/rc2.d/S??mqlite /etc/rc0.d/K??mqlite >/dev/null 2>&1'
fi

if command -v deb-systemd-helper >/dev/null; then
  check systemd-enabled "deb-systemd-helper enabled mqlite.service (multi-user.target.wants link)" \
    test -L /etc/systemd/system/multi-user.target.wants/mqlite.service
fi

if command -v systemd-analyze >/dev/null; then
  verify=$(timeout 60 systemd-analyze verify /lib/systemd/system/mqlite.service 2>&1) || true
  if [ -z "$verify" ]; then
    pass systemd-analyze-verify
  else
    echo "$verify"
    fail systemd-analyze-verify "systemd-analyze verify /lib/systemd/system/mqlite.service printed warnings"
  fi
else
  note "systemd-analyze not found: the unit is not verified"
fi

# The postinst started the broker unless policy-rc.d forbids it or there is no runlevel (as
# in containers: invoke-rc.d starts nothing then).
policy_forbids_start() { # policy-rc.d exits 101: action forbidden
  [ -x /usr/sbin/policy-rc.d ] || return 1
  local rc=0
  /usr/sbin/policy-rc.d mqlite start >/dev/null 2>&1 || rc=$?
  [ $rc = 101 ]
}
no_runlevel() { # sysvinit's runlevel unknown (no init running, as in containers)
  [ ! -d /run/systemd/system ] && ! runlevel >/dev/null 2>&1
}
if policy_forbids_start || no_runlevel; then
  if policy_forbids_start; then
    note "policy-rc.d forbids starting services here: the postinst did not start mqlite"
  else
    note "no runlevel here (no init running): invoke-rc.d starts no service"
  fi
  check postinst-left-stopped "the postinst honours policy-rc.d and runlevels (no broker running)" \
    eval '! /etc/init.d/mqlite status >/dev/null 2>&1'
elif [ -d /run/systemd/system ]; then
  check postinst-started "the postinst started mqlite.service" wait_for 10 systemctl --quiet is-active mqlite.service
  timeout 60 systemctl stop mqlite.service || true
else
  check postinst-started "the postinst started mqlite (/etc/init.d/mqlite status)" \
    wait_for 10 eval '/etc/init.d/mqlite status >/dev/null 2>&1'
  p=$(broker_pid)
  [ -n "$p" ] && pids+=("$p")
  timeout 40 /etc/init.d/mqlite stop || true
fi

# ---- the init script: start, round trip, status, stop ----------------------------------
start_ok() {
  local out rc=0
  out=$(timeout 30 /etc/init.d/mqlite start 2>&1) || rc=$?
  echo "/etc/init.d/mqlite start: $out (exit $rc)"
  local p
  p=$(broker_pid)
  [ -n "$p" ] && pids+=("$p")
  [ "$rc" = 0 ] && [[ $out == *"OK (pid"* ]]
}
check start "/etc/init.d/mqlite start (exit 0, 'OK (pid N)')" start_ok
pid=$(broker_pid)
echo "package.sh: broker pid ${pid:-none}"
runs_as_mqlite() { [ -n "$pid" ] && [ "$(ps -o uid= -p "$pid" | tr -d ' ')" = "$(id -u mqlite)" ]; }
check runs-as-mqlite "the broker (pid ${pid:-none}) runs as user mqlite: $(ps -o user=,uid=,args= -p "${pid:-1}" 2>&1)" \
  wait_for 5 runs_as_mqlite
check piddir-owner "/run/mqlite belongs to mqlite (the broker can remove its pid file)" \
  eval '[ "$(stat -c %U /run/mqlite 2>/dev/null)" = mqlite ]'
check listening "the broker listens on 127.0.0.1:$port" wait_for 5 port_taken

roundtrip() {
  local msg="hello from .ci/package.sh $$" i
  : >"$work/sub.out"
  timeout 20 mosquitto_sub -h 127.0.0.1 -p "$port" -t "$topic" -q 1 -C 1 -W 15 >"$work/sub.out" 2>&1 &
  sub_pid=$!
  # publish until the subscriber has it (it may not have subscribed yet): at most ~18 s
  for i in $(seq 12); do
    sleep 0.5
    timeout 5 mosquitto_pub -h 127.0.0.1 -p "$port" -t "$topic" -q 1 -m "$msg" ||
      echo "mosquitto_pub -h 127.0.0.1 -p $port failed (try $i)"
    wait_for 1 grep -qxF "$msg" "$work/sub.out" && break
  done
  wait "$sub_pid" 2>/dev/null || true
  sub_pid=
  grep -qxF "$msg" "$work/sub.out" || {
    echo "mosquitto_sub got: $(head -c 300 "$work/sub.out")"
    return 1
  }
}
check roundtrip-qos1 "QoS 1 round trip with mosquitto_sub/mosquitto_pub on 127.0.0.1:$port" roundtrip

status_running() {
  local out rc=0
  out=$(timeout 10 /etc/init.d/mqlite status 2>&1) || rc=$?
  echo "/etc/init.d/mqlite status: $out (exit $rc)"
  [ "$rc" = 0 ] && [[ $out == *"is running"* ]]
}
check status "/etc/init.d/mqlite status: running, exit 0" status_running

stop_ok() {
  local out rc=0
  out=$(timeout 40 /etc/init.d/mqlite stop 2>&1) || rc=$?
  echo "/etc/init.d/mqlite stop: $out (exit $rc)"
  [ "$rc" = 0 ] && [[ $out == *OK* ]]
}
check stop "/etc/init.d/mqlite stop (exit 0, OK)" stop_ok
check stop-process-gone "broker pid ${pid:-none} gone after stop" wait_for 5 gone "$pid"
check stop-port-free "nothing left listening on port $port after stop: $(ss -Hltnp "sport = :$port" 2>/dev/null | head -2)" \
  wait_for 5 port_free
check stop-pidfile-gone "$pidfile removed" eval "[ ! -e $pidfile ]"
status_stopped() {
  local rc=0
  timeout 10 /etc/init.d/mqlite status >/dev/null 2>&1 || rc=$?
  [ "$rc" = 3 ] || { echo "/etc/init.d/mqlite status after stop: exit $rc (want 3)"; return 1; }
}
check status-stopped "/etc/init.d/mqlite status after stop: exit 3" status_stopped
# persistence true: the store was created in /var/lib/mqlite; started as root, the broker
# opened it before giving root up and then gave its files to mqlite (the systemd unit, as
# mqlite, must be able to open the same store).
check store "the store /var/lib/mqlite/mqlite.db exists" test -s /var/lib/mqlite/mqlite.db
check store-owner "the store belongs to mqlite" \
  test "$(stat -c %U /var/lib/mqlite/mqlite.db 2>/dev/null)" = mqlite

# ---- 4. upgrade: local changes in /etc/mqlite stay --------------------------------------
echo "# local change by .ci/package.sh" >>/etc/mqlite/mqlite.conf
echo "# local file by .ci/package.sh" >/etc/mqlite/conf.d/ci-package.conf
upgrade_ok() {
  timeout 300 dpkg -i "$deb" </dev/null >"$work/upgrade.log" 2>&1 || { cat "$work/upgrade.log"; return 1; }
  grep -qxF "# local change by .ci/package.sh" /etc/mqlite/mqlite.conf &&
    [ -f /etc/mqlite/conf.d/ci-package.conf ] && [ "$(pkg_status)" = "install ok installed" ]
}
check upgrade-keeps-conf "dpkg -i over the installed package keeps /etc/mqlite/mqlite.conf's change and conf.d/" upgrade_ok
# conf.d/ is the administrator's: dpkg leaves files there on purge, so remove ours now.
rm -f /etc/mqlite/conf.d/ci-package.conf

# ---- 5. remove, then purge (with a running broker: prerm stops it) ----------------------
timeout 40 /etc/init.d/mqlite stop >/dev/null 2>&1 || true
pid2=
if timeout 30 /etc/init.d/mqlite start >/dev/null 2>&1; then
  pid2=$(broker_pid)
  [ -n "$pid2" ] && pids+=("$pid2")
fi
remove_ok() {
  timeout 120 dpkg --remove mqlite </dev/null >"$work/remove.log" 2>&1 || { cat "$work/remove.log"; return 1; }
  [ "$(pkg_status)" = "deinstall ok config-files" ] || { echo "dpkg status after remove: $(pkg_status)"; return 1; }
}
check remove "dpkg --remove mqlite (status: config-files)" remove_ok
if [ -n "$pid2" ]; then
  check remove-stopped-broker "the prerm stopped the running broker (pid $pid2)" wait_for 5 gone "$pid2"
else
  fail remove-stopped-broker "the broker did not start again before the remove"
fi
check remove-keeps "after remove: /etc/mqlite/mqlite.conf, /etc/init.d/mqlite, the user and /var/lib/mqlite stay" \
  eval '[ -f /etc/mqlite/mqlite.conf ] && [ -f /etc/init.d/mqlite ] && getent passwd mqlite >/dev/null && [ -d /var/lib/mqlite ]'
check remove-unregistered "after remove: no /etc/rc?.d/*mqlite links" eval '! ls /etc/rc?.d/*mqlite >/dev/null 2>&1'
if command -v deb-systemd-helper >/dev/null; then
  check remove-masked "after remove: mqlite.service masked (systemd makes no unit of the init script)" \
    eval '[ "$(readlink /etc/systemd/system/mqlite.service)" = /dev/null ]'
fi

purge_ok() {
  timeout 120 dpkg --purge mqlite </dev/null >"$work/purge.log" 2>&1 || { cat "$work/purge.log"; return 1; }
  [ -z "$(pkg_status)" ] || [ "$(pkg_status)" = "unknown ok not-installed" ] || { echo "dpkg status after purge: $(pkg_status)"; return 1; }
}
check purge "dpkg --purge mqlite" purge_ok
check purge-user-gone "user and group mqlite removed" \
  eval '! getent passwd mqlite >/dev/null && ! getent group mqlite >/dev/null'
check purge-data-gone "/var/lib/mqlite, /var/log/mqlite and /run/mqlite removed" \
  eval '[ ! -e /var/lib/mqlite ] && [ ! -e /var/log/mqlite ] && [ ! -e /run/mqlite ]'
check purge-conffiles-gone "/etc/mqlite (mqlite.conf, conf.d) and /etc/init.d/mqlite removed" \
  eval '[ ! -e /etc/mqlite ] && [ ! -e /etc/init.d/mqlite ]'
leftovers() { # systemd links, masks and deb-systemd-helper state; rc links
  find /etc/systemd/system /var/lib/systemd/deb-systemd-helper-enabled \
    /var/lib/systemd/deb-systemd-helper-masked /etc/rc?.d -name '*mqlite*' 2>/dev/null
}
check purge-unregistered "no mqlite links or state left in /etc/systemd/system, /var/lib/systemd, /etc/rc?.d: $(leftovers | tr '\n' ' ')" \
  eval '[ -z "$(leftovers)" ]'
check purge-port-free "nothing listening on port $port after the purge" port_free
installed_by_us=false

if [ $failed = 0 ]; then echo "package.sh: all checks passed"; else echo "package.sh: some checks FAILED"; fi
exit $failed
