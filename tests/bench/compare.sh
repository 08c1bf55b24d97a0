#!/usr/bin/env bash
# compare.sh: runs every mqbench scenario against mqlite and mosquitto in the same run and
# prints a Markdown table of medians with the mqlite/mosquitto ratio.
#
# Each (scenario, repetition, broker) gets a freshly started broker on a free loopback
# port, with equivalent configurations (listener on 127.0.0.1, anonymous access, the same
# max_inflight_messages and max_queued_messages, TCP_NODELAY on both; persistence only for
# the persistent scenario). The two brokers alternate: which one goes first flips every
# run, so drift on this shared machine hits both alike. A broker that dies during a run is
# reported (status=crash) with the tail of its log. Nothing is sent anywhere but 127.0.0.1.
#
# usage: tests/bench/compare.sh [MQLITE_BIN] [--reps N] [--seconds S] [--only a,b]
#                               [--mqbench PATH] [--mosquitto PATH] [--chart out.png]
#                               [--workdir DIR] [--keep]
#                               [--mqlite-conf LINE]... [--mosquitto-conf LINE]...
# --mqlite-conf / --mosquitto-conf append a configuration line for that broker (repeatable),
# e.g. --mosquitto-conf 'autosave_interval 1'.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
mqlite="$root/build-bench/mqlite"
mqbench=""
mosquitto=/usr/sbin/mosquitto
reps=3
seconds=2
warmup=0.5
only=""
chart=""
workdir=""
keep=0
mqlite_extra=()
mosquitto_extra=()

die() { echo "compare.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
    --reps) reps=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --mqbench) mqbench=$2; shift 2 ;;
    --mosquitto) mosquitto=$2; shift 2 ;;
    --chart) chart=$2; shift 2 ;;
    --workdir) workdir=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --mqlite-conf) mqlite_extra+=("$2"); shift 2 ;;
    --mosquitto-conf) mosquitto_extra+=("$2"); shift 2 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) mqlite=$1; shift ;;
    esac
done
mqlite=$(realpath "$mqlite" 2>/dev/null || echo "$mqlite")
[ -n "$mqbench" ] || mqbench="$(dirname "$mqlite")/tests/bench/mqbench"
[ -x "$mqlite" ] || die "no mqlite binary at $mqlite (meson setup build-bench --buildtype=release && ninja -C build-bench)"
[ -x "$mqbench" ] || die "no mqbench binary at $mqbench"
[ -x "$mosquitto" ] || die "no mosquitto at $mosquitto (apt-get install mosquitto)"
case "$reps" in ''|*[!0-9]*|0) die "--reps wants a positive number" ;; esac

if [ -n "$chart" ] && ! command -v gnuplot >/dev/null; then
    echo "compare.sh: installing gnuplot-nox for --chart" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q gnuplot-nox >/dev/null ||
        die "could not install gnuplot-nox"
fi

# As many descriptors as allowed, for the brokers and mqbench (connection storm).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# On disk, not tmpfs: write_bytes of the persistent scenario counts real writes.
if [ -z "$workdir" ]; then
    workdir=$(mktemp -d /var/tmp/mqbench.XXXXXX)
else
    mkdir -p "$workdir"
fi
results="$workdir/results.txt"
: >"$results"
cleanup() {
    [ -n "${bpid:-}" ] && kill "$bpid" 2>/dev/null
    if [ "$keep" = 0 ]; then rm -rf "$workdir"; else echo "kept $workdir" >&2; fi
}
trap cleanup EXIT

# Broker limits, the same for both (0 = no limit for the queue: mosquitto 2.0.11 drops
# QoS 1 messages to online subscribers with a finite max_queued_messages long before its
# queue is that long; see README.md).
INFLIGHT=20
QUEUED=0

# name | mqbench arguments | needs persistence
scenarios=(
    "fanin-q0-16B|--scenario fanin --qos 0 --size 16 --clients 8|0"
    "fanin-q0-1KiB|--scenario fanin --qos 0 --size 1024 --clients 8|0"
    "fanin-q1-16B|--scenario fanin --qos 1 --size 16 --clients 8|0"
    "fanin-q1-1KiB|--scenario fanin --qos 1 --size 1024 --clients 8|0"
    "fanout-q0-16B|--scenario fanout --qos 0 --size 16 --clients 16|0"
    "fanout-q1-16B|--scenario fanout --qos 1 --size 16 --clients 16|0"
    "pairs-q0-16B|--scenario pairs --qos 0 --size 16 --clients 8|0"
    "pairs-q1-16B|--scenario pairs --qos 1 --size 16 --clients 8|0"
    "shared-q1-16B|--scenario shared --qos 1 --size 16 --clients 8 --subs 4|0"
    "connstorm|--scenario connstorm --clients 10000|0"
    "takeover|--scenario takeover --clients 1000|0"
    "retained|--scenario retained --count 10000 --no-cleanup|0"
    "persistent|--scenario persistent --count 5000 --window 32|1"
    "persist-rate|--scenario persistent --count 5000 --window 32 --rate 1000|1"
)

free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 12000))
        if ! ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# write_conf BROKER PORT PERSIST DIR -> path of the configuration file
write_conf() {
    local broker=$1 port=$2 persist=$3 dir=$4 f="$4/$1.conf"
    {
        echo "listener $port 127.0.0.1"
        echo "allow_anonymous true"
        # as root both brokers would give root up (mosquitto 2.0 and mqlite alike): same
        # user, same store access
        [ "$(id -u)" = 0 ] && echo "user root"
        echo "max_inflight_messages $INFLIGHT"
        echo "max_queued_messages $QUEUED"
        if [ "$broker" = mosquitto ]; then
            echo "set_tcp_nodelay true" # mqlite sets TCP_NODELAY on every connection
        fi
        if [ "$persist" = 1 ]; then
            echo "persistence true"
            echo "persistence_location $dir/store/"
        elif [ "$broker" = mqlite ]; then
            echo "persistence false"
        fi
        if [ "$broker" = mosquitto ]; then
            for l in ${mosquitto_extra[@]+"${mosquitto_extra[@]}"}; do echo "$l"; done
        else
            for l in ${mqlite_extra[@]+"${mqlite_extra[@]}"}; do echo "$l"; done
        fi
    } >"$f"
    echo "$f"
}

# start_broker BROKER PERSIST DIR: sets bpid and bport, or returns 1
start_broker() {
    local broker=$1 persist=$2 dir=$3 conf bin
    bin=$mqlite
    [ "$broker" = mosquitto ] && bin=$mosquitto
    mkdir -p "$dir/store"
    for _ in 1 2 3; do
        bport=$(free_port) || return 1
        conf=$(write_conf "$broker" "$bport" "$persist" "$dir")
        "$bin" -c "$conf" >"$dir/$broker.log" 2>&1 &
        bpid=$!
        for _ in $(seq 1 100); do
            if ss -Hltn "sport = :$bport" 2>/dev/null | grep -q .; then
                return 0
            fi
            kill -0 "$bpid" 2>/dev/null || break
            sleep 0.05
        done
        kill "$bpid" 2>/dev/null || true
        wait "$bpid" 2>/dev/null || true
        bpid=""
    done
    return 1
}

# stop_broker: SIGTERM, then SIGKILL after 5 s; sets stop_rc to the exit status (or "hung")
stop_broker() {
    stop_rc=0
    kill -TERM "$bpid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$bpid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$bpid" 2>/dev/null; then
        kill -KILL "$bpid" 2>/dev/null || true
        wait "$bpid" 2>/dev/null || true
        stop_rc="hung (no exit 5 s after SIGTERM, killed)"
    else
        wait "$bpid" 2>/dev/null || stop_rc=$?
    fi
    bpid=""
}

persist_ok=1
probe_dir="$workdir/probe"
mkdir -p "$probe_dir/store"
if ! "$mqlite" --check -c "$(write_conf mqlite 1883 1 "$probe_dir")" >"$probe_dir/check.log" 2>&1; then
    persist_ok=0
    echo "compare.sh: mqlite refuses 'persistence true' ($(head -1 "$probe_dir/check.log")):" \
        "skipping the persistent scenario for both brokers" >&2
fi

selected=()
for s in "${scenarios[@]}"; do
    name=${s%%|*}
    if [ -n "$only" ] && ! [[ ",$only," == *",$name,"* || ",$only," == *",${name%%-*},"* ]]; then
        continue
    fi
    if [ "${s##*|}" = 1 ] && [ "$persist_ok" = 0 ]; then
        continue
    fi
    selected+=("$s")
done
[ ${#selected[@]} -gt 0 ] || die "no scenario selected"

anomalies="$workdir/anomalies.txt"
: >"$anomalies"
start=$(date +%s)
run=0
for rep in $(seq 1 "$reps"); do
    for s in "${selected[@]}"; do
        IFS='|' read -r name args persist <<<"$s"
        run=$((run + 1))
        if [ $((run % 2)) = 1 ]; then order="mqlite mosquitto"; else order="mosquitto mqlite"; fi
        for broker in $order; do
            dir="$workdir/run$run-$broker"
            mkdir -p "$dir"
            if ! start_broker "$broker" "$persist" "$dir"; then
                echo "broker=$broker rep=$rep name=$name status=nostart" >>"$results"
                echo "$name rep $rep: $broker did not start: $(tail -2 "$dir/$broker.log" | tr '\n' ' ')" >>"$anomalies"
                continue
            fi
            extra=(--seconds "$seconds" --warmup "$warmup")
            [ "$persist" = 1 ] && extra+=(--store-dir "$dir/store")
            # shellcheck disable=SC2086 # args is a list of words on purpose
            line=$(timeout 300 "$mqbench" --port "$bport" --pid "$bpid" $args "${extra[@]}" \
                2>"$dir/mqbench.err") || true
            [ -n "$line" ] || line="status=noresult"
            alive=1
            kill -0 "$bpid" 2>/dev/null || alive=0
            if [ "$alive" = 0 ]; then
                wait "$bpid" 2>/dev/null && rc=0 || rc=$?
                bpid=""
                line="$line status=crash"
                echo "$name rep $rep: $broker died during the run (exit $rc): $(tail -3 "$dir/$broker.log" | tr '\n' ' ')" >>"$anomalies"
            else
                stop_broker
                if [ "$stop_rc" != 0 ]; then
                    echo "$name rep $rep: $broker stop: exit $stop_rc on SIGTERM (expected 0)" >>"$anomalies"
                fi
            fi
            echo "broker=$broker rep=$rep name=$name $line" >>"$results"
            st=$(sed -n 's/.*status=\([a-z]*\).*/\1/p' <<<"$line" | tail -1)
            if [ "$st" != ok ]; then
                echo "$name rep $rep: $broker status=$st: $(head -c 300 "$dir/mqbench.err" | tr '\n' ' ') [$line]" >>"$anomalies"
            fi
            printf '%-14s rep %d %-9s %s\n' "$name" "$rep" "$broker" \
                "$(grep -oE '(^| )(msgs_per_s|status)=[^ ]*' <<<"$line" | tr -d '\n')" >&2
            [ "$keep" = 1 ] || rm -rf "$dir/store"
        done
    done
done
elapsed=$(($(date +%s) - start))

# ---- report ----------------------------------------------------------------------------
names=$(for s in "${selected[@]}"; do echo "${s%%|*}"; done)
awk -v names="$names" -v reps="$reps" -v elapsed="$elapsed" -v chartdata="$workdir/chart.dat" '
function val(line, key,   m) {
    if (match(line, "(^| )" key "=[^ ]*")) {
        m = substr(line, RSTART, RLENGTH); sub(/^ /, "", m); sub(/^[^=]*=/, "", m)
        return m
    }
    return ""
}
function median(list,   a, n, i, j, t) {
    n = split(list, a, " ")
    if (n == 0) return ""
    for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return (n % 2) ? a[(n + 1) / 2] + 0 : (a[n / 2] + a[n / 2 + 1]) / 2
}
function fmt(v) {
    if (v == "") return "n/a"
    if (v + 0 >= 100) return sprintf("%.0f", v)
    if (v + 0 >= 10) return sprintf("%.1f", v)
    return sprintf("%.2f", v)
}
function ratio(a, b) {
    if (a == "" || b == "" || b + 0 == 0) return "n/a"
    return sprintf("%.2f", a / b)
}
function med(name, broker, key) { return median(vals[name, broker, key]) }
{
    b = val($0, "broker"); n = val($0, "name"); st = val($0, "status")
    runs[n, b]++
    if (st == "ok") ok[n, b]++
    split("msgs_per_s msgs_per_cpu_s p99_us rss_kb rss_per_conn_b us_per_takeover survivors store_msgs_per_s drain_msgs_per_s write_bytes_per_msg store_growth_b fsyncs_per_s lost", keys, " ")
    for (k in keys) {
        v = val($0, keys[k])
        if (v ~ /^-?[0-9.]+$/) vals[n, b, keys[k]] = vals[n, b, keys[k]] " " v
    }
    if (st == "crash") crash[n, b]++
}
END {
    nn = split(names, nm, "\n")
    printf "mqlite vs mosquitto, medians of %d repetitions (%d s). ratio = mqlite / mosquitto: above 1 is better for msgs/s and msgs/CPU-s, below 1 is better for p99 and RSS.\n\n", reps, elapsed
    print "| scenario | msgs/s mqlite | msgs/s mosquitto | ratio | msgs/CPU-s mqlite | msgs/CPU-s mosquitto | ratio | p99 us mqlite | p99 us mosquitto | ratio | RSS kB mqlite | RSS kB mosquitto | ratio | runs ok mqlite / mosquitto |"
    print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    for (i = 1; i <= nn; i++) {
        n = nm[i]; if (n == "") continue
        line = "| " n
        split("msgs_per_s msgs_per_cpu_s p99_us rss_kb", cols, " ")
        for (c = 1; c <= 4; c++) {
            a = med(n, "mqlite", cols[c]); m = med(n, "mosquitto", cols[c])
            line = line " | " fmt(a) " | " fmt(m) " | " ratio(a, m)
            if (c <= 2) r[n, c] = ratio(a, m)
        }
        line = line sprintf(" | %d/%d / %d/%d", ok[n, "mqlite"], runs[n, "mqlite"], ok[n, "mosquitto"], runs[n, "mosquitto"])
        if (crash[n, "mqlite"] || crash[n, "mosquitto"]) line = line " CRASH"
        print line " |"
        print n, r[n, 1], r[n, 2] > chartdata
    }
    print ""
    print "| scenario-specific | mqlite | mosquitto | ratio |"
    print "|---|---:|---:|---:|"
    ns = split("connstorm:rss_per_conn_b:RSS per idle connection (B);" \
               "connstorm:msgs_per_s:connects/s;" \
               "takeover:us_per_takeover:time per takeover (us);" \
               "takeover:survivors:survivors (must be 1);" \
               "retained:store_msgs_per_s:retained publish rate (QoS 1 msgs/s);" \
               "retained:msgs_per_s:retained burst delivery (msgs/s);" \
               "persistent:msgs_per_s:store rate (QoS 1 msgs/s);" \
               "persistent:drain_msgs_per_s:drain rate (msgs/s);" \
               "persistent:write_bytes_per_msg:bytes written per message;" \
               "persistent:store_growth_b:store growth (B);" \
               "persistent:fsyncs_per_s:fsyncs per second;" \
               "persist-rate:msgs_per_s:QoS 1 msgs/s stored (target 1000);" \
               "persist-rate:write_bytes_per_msg:bytes written per message;" \
               "persist-rate:fsyncs_per_s:fsyncs per second", items, ";")
    for (k = 1; k <= ns; k++) {
        split(items[k], f, ":"); n = f[1]; key = f[2]; label = items[k]; sub(/^[^:]*:[^:]*:/, "", label)
        if (!((n, "mqlite") in runs) && !((n, "mosquitto") in runs)) continue
        a = med(n, "mqlite", key); m = med(n, "mosquitto", key)
        printf "| %s: %s | %s | %s | %s |\n", n, label, fmt(a), fmt(m), ratio(a, m)
    }
    for (i = 1; i <= nn; i++) {
        n = nm[i]
        a = med(n, "mqlite", "lost"); m = med(n, "mosquitto", "lost")
        if ((a != "" && a > 0) || (m != "" && m > 0))
            printf "| %s: messages lost (median) | %s | %s | |\n", n, fmt(a), fmt(m)
    }
}' "$results"

if [ "$persist_ok" = 0 ]; then
    echo
    echo "persistent: skipped for both brokers, mqlite refuses 'persistence true' here."
fi
if [ -s "$anomalies" ]; then
    echo
    echo "Anomalies:"
    sed 's/^/- /' "$anomalies"
fi

if [ -n "$chart" ]; then
    gnuplot <<EOF
set terminal pngcairo size 1100,520 font "sans,10" noenhanced
set output "$chart"
set title "mqlite / mosquitto (medians of $reps runs; above 1: mqlite better)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set logscale y 2
set yrange [0.015625:64]
set grid ytics
set xtics rotate by -30
set key top left
set arrow from graph 0, first 1 to graph 1, first 1 nohead lw 2 dt 2
plot "$workdir/chart.dat" using (strcol(2) eq "n/a" ? 1/0 : \$2):xtic(1) title "msgs/s", \
     "" using (strcol(3) eq "n/a" ? 1/0 : \$3) title "msgs per broker CPU-second"
EOF
    echo
    echo "chart: $chart"
fi
