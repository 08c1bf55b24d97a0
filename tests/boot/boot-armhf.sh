#!/usr/bin/env bash
# Boot test: an armhf busybox root file system with the static armhf mqlite, booted with
# busybox init as PID 1 in its own mount and PID namespaces (unshare + chroot), every ARM
# program run by qemu-arm-static through binfmt_misc. busybox init runs /etc/init.d/rcS,
# which starts syslogd and then S50mqlite (the shipped init script); a client on the host
# publishes and subscribes over loopback (the namespaces share the host's network); then
# init is told to power off (SIGUSR2), rcK runs "S50mqlite stop", and the broker must have
# stopped cleanly.
#
#   sudo bash tests/boot/boot-armhf.sh        (root: unshare, chroot, binfmt_misc)
#
# Needs: Debian's qemu-user-static (a static qemu-arm that works inside the chroot; it is
# registered here under the name mqlite-boot-arm with flags FP, and unregistered at the
# end), busybox-static:armhf (fetched with apt-get download, unpacked with dpkg -x, never
# installed), mosquitto-clients, and the cross build of .ci/cross.sh. Everything it builds is
# under build-boot-armhf/. Every wait is bounded. Ends with "N passed, M failed".
# MQLITE_ARM_BIN=FILE boots that static armhf broker instead of building one.
# shellcheck disable=SC2317 # functions run through check/wait_for
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
top=$PWD
work=$top/build-boot-armhf
root=$work/rootfs
binfmt=/proc/sys/fs/binfmt_misc
entry=mqlite-boot-arm
passed=0 failed=0
init_pid='' unshare_pid='' mounted_binfmt=false registered=false

check() { # NAME COMMAND...: run a check, count and print it
  local name=$1
  shift
  if "$@"; then
    passed=$((passed + 1))
    echo "PASS $name"
  else
    failed=$((failed + 1))
    echo "FAIL $name"
  fi
}
give_up() {
  echo "boot-armhf: FAILED: $1" >&2
  failed=$((failed + 1))
  finish
}
cleanup() {
  if [ -n "$unshare_pid" ] && kill -0 "$unshare_pid" 2>/dev/null; then
    kill -KILL "$unshare_pid" 2>/dev/null # --kill-child takes the namespace's init along
    wait "$unshare_pid" 2>/dev/null
  fi
  if $registered && [ -e "$binfmt/$entry" ]; then echo -1 >"$binfmt/$entry"; fi
  if $mounted_binfmt; then umount "$binfmt" 2>/dev/null; fi
}
finish() {
  cleanup
  echo "boot-armhf: console $work/console.log, broker log $root/var/log/mqlite/mqlite.log"
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit
}
trap cleanup EXIT
wait_for() { # SECONDS COMMAND...: poll every 0.2 s until COMMAND succeeds
  local n=$(($1 * 5))
  shift
  until "$@"; do
    n=$((n - 1))
    [ $n -gt 0 ] || return 1
    sleep 0.2
  done
}

[ "$(id -u)" -eq 0 ] || give_up "must run as root (unshare, chroot, binfmt_misc)"

# ---- packages and the broker ---------------------------------------------------------
want=(qemu-user-static mosquitto-clients util-linux)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >/dev/null || give_up "apt-get install ${missing[*]}"
fi
broker=${MQLITE_ARM_BIN:-}
if [ -z "$broker" ]; then
  bash .ci/cross.sh armhf --build-only >"$work.cross.log" 2>&1 || {
    tail -20 "$work.cross.log"
    give_up "bash .ci/cross.sh armhf --build-only (log: $work.cross.log)"
  }
  broker=$top/build-cross-armhf/dist/mqlite
fi
mkdir -p "$work/debs"
if ! ls "$work"/debs/busybox-static_*_armhf.deb >/dev/null 2>&1; then
  added_arch=false
  if ! dpkg --print-foreign-architectures | grep -qx armhf; then
    dpkg --add-architecture armhf && added_arch=true
  fi
  apt-cache policy busybox-static:armhf | grep -q 'Candidate: [0-9]' || apt-get update -qq
  (cd "$work/debs" && apt-get download busybox-static:armhf) >/dev/null 2>&1
  got=$?
  # leave dpkg as it was (a lagging armhf index would make `apt-get update` fail later)
  if $added_arch; then dpkg --remove-architecture armhf && apt-get update -qq >/dev/null 2>&1; fi
  [ $got -eq 0 ] || give_up "apt-get download busybox-static:armhf"
fi

# ---- binfmt_misc: ARM ELF files run by the static qemu-arm, also inside the chroot ------
if [ ! -e "$binfmt/register" ]; then
  mount -t binfmt_misc binfmt_misc "$binfmt" ||
    give_up "cannot mount binfmt_misc on $binfmt (no binfmt_misc in this kernel or sandbox)"
  mounted_binfmt=true
fi
if [ ! -e "$binfmt/$entry" ]; then
  # The ELF header of 32-bit little-endian ARM executables (as Debian's qemu-arm.conf).
  # F: the kernel opens the interpreter now, so it need not exist inside the chroot.
  # P: argv[0] is preserved (busybox applets are symlinks, and busybox sh re-executes itself
  # through /proc/self/exe with the applet name as argv[0]).
  printf '%s' ":$entry:M::\\x7f\\x45\\x4c\\x46\\x01\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\x28\\x00:\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:/usr/bin/qemu-arm-static:FP" \
    >"$binfmt/register" || give_up "cannot register $entry in $binfmt/register"
  registered=true
fi

# ---- the root file system -------------------------------------------------------------
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
rm -rf "$root"
mkdir -p "$root"
dpkg -x "$work"/debs/busybox-static_*_armhf.deb "$root" || give_up "dpkg -x busybox-static"
mkdir -p "$root"/{sbin,usr/bin,usr/sbin,proc,dev,tmp,root,etc/init.d,etc/mqlite,var/run,var/log/mqlite,var/lib/mqlite}
chmod 1777 "$root/tmp"
applets=$(chroot "$root" /bin/busybox --list) || give_up "the armhf busybox does not run via binfmt_misc"
for a in $applets; do
  [ -e "$root/bin/$a" ] || ln -s busybox "$root/bin/$a"
done
ln -sf ../bin/busybox "$root/sbin/init"
mknod -m 666 "$root/dev/null" c 1 3
mknod -m 666 "$root/dev/zero" c 1 5
mknod -m 444 "$root/dev/urandom" c 1 9
install -m 755 "$broker" "$root/usr/sbin/mqlite"
install -m 755 etc/init.d/S50mqlite "$root/etc/init.d/S50mqlite"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
  >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
chown 65534:65534 "$root/var/log/mqlite" "$root/var/lib/mqlite"
cat >"$root/etc/inittab" <<'EOF'
::sysinit:/etc/init.d/rcS
::shutdown:/etc/init.d/rcK
EOF
cat >"$root/etc/init.d/rcS" <<'EOF'
#!/bin/sh
mount -t proc proc /proc
for s in /etc/init.d/S??*; do
	[ -x "$s" ] && "$s" start
done
echo "rcS done"
EOF
cat >"$root/etc/init.d/rcK" <<'EOF'
#!/bin/sh
for s in $(ls -r /etc/init.d/S??*); do
	[ -x "$s" ] && "$s" stop
done
echo "rcK done"
EOF
cat >"$root/etc/init.d/S01syslogd" <<'EOF'
#!/bin/sh
case "$1" in
start) syslogd -O /var/log/messages && echo "Starting syslogd: OK" ;;
stop) [ -r /var/run/syslogd.pid ] && kill "$(cat /var/run/syslogd.pid)" ;;
esac
EOF
chmod 755 "$root"/etc/init.d/rcS "$root"/etc/init.d/rcK "$root"/etc/init.d/S01syslogd
cat >"$root/etc/mqlite/mqlite.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
pid_file /var/run/mqlite.pid
log_dest file /var/log/mqlite/mqlite.log
log_dest syslog
user nobody
persistence true
persistence_location /var/lib/mqlite
EOF

# ---- boot -----------------------------------------------------------------------------
echo "booting $root (broker on 127.0.0.1:$port)"
t0=$(date +%s)
# Without a console tty busybox init keeps the descriptors it was started with: this file
# is the console (init's and the rc scripts' output).
console=$work/console.log
unshare --mount --pid --fork --kill-child chroot "$root" /sbin/init >"$console" 2>&1 &
unshare_pid=$!
child_of_unshare() {
  init_pid=$(cat "/proc/$unshare_pid/task/$unshare_pid/children" 2>/dev/null)
  init_pid=${init_pid%% *}
  [ -n "$init_pid" ]
}
wait_for 10 child_of_unshare || give_up "unshare did not start init ($(cat "$console"))"
inside() { nsenter -t "$init_pid" -m -p -r /bin/busybox "$@"; }
is_pid1() { grep -q "^NSpid:.*[[:space:]]1$" "/proc/$init_pid/status"; }
check "busybox init runs as PID 1 of its namespace" is_pid1
pidfile=$root/var/run/mqlite.pid
check "rcS started S50mqlite (pid file written)" wait_for 60 test -s "$pidfile"
check "S50mqlite start said OK" wait_for 10 grep -q "Starting mqlite: OK" "$console"
check "rcS finished" wait_for 30 grep -q "rcS done" "$console"
echo "   booted in $(($(date +%s) - t0)) s"
pub() { mosquitto_pub -h 127.0.0.1 -p "$port" -i boot-pub -q 1 -r -t boot/armhf -m "$1"; }
check "host client publishes over loopback" wait_for 30 pub "hello from the host"
got=$(mosquitto_sub -h 127.0.0.1 -p "$port" -i boot-sub -t boot/armhf -C 1 -W 10 2>&1)
check "host client receives the retained message back" test "$got" = "hello from the host"
nspid=$(cat "$pidfile")
uid_is_nobody() { inside cat "/proc/$nspid/status" | grep -Eq '^Uid:[[:space:]]+65534[[:space:]]+65534'; }
check "broker dropped root to nobody" uid_is_nobody
check "S50mqlite status: running" inside sh /etc/init.d/S50mqlite status
check "log_dest file has the broker's lines" grep -q "\[broker.start\] mqlite .* running (pid $nspid)" "$root/var/log/mqlite/mqlite.log"
check "log_dest syslog reached busybox syslogd" wait_for 5 grep -q "mqlite.*notice \[broker.start\]" "$root/var/log/messages"
log=$root/var/log/mqlite/mqlite.log
mv "$log" "$log.1" # as logrotate does, then reload
inside sh /etc/init.d/S50mqlite reload >/dev/null
check "S50mqlite reload: log file reopened after rotation" \
  wait_for 10 grep -q "\[broker.reload\] SIGHUP: log files reopened" "$log"
check "the new log file belongs to nobody" test "$(stat -c %u "$log" 2>/dev/null)" = 65534

# ---- power off ------------------------------------------------------------------------
t1=$(date +%s)
kill -USR2 "$init_pid" # busybox init: run ::shutdown (rcK), kill the rest, power off
gone() { ! kill -0 "$unshare_pid" 2>/dev/null; }
check "poweroff ends the namespace" wait_for 60 gone
echo "   powered off in $(($(date +%s) - t1)) s"
check "rcK stopped mqlite (S50mqlite stop said OK)" grep -Eq "Stopping mqlite \(pid [0-9]+\): OK" "$console"
check "the broker shut down cleanly" grep -q "\[broker.stop\] mqlite stopped" "$log"
check "pid file removed" test ! -e "$pidfile"
finish
