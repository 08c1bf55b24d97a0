#!/usr/bin/env bash
# Cross-build a static, stripped mqlite for a gateway architecture and run the native
# integration suite against it under qemu-user.
#
#   bash .ci/cross.sh armhf|arm64 [--build-only]
#
# Steps (each prints its duration):
#   1. host packages: the test dependencies (.ci/deps.sh test), the cross compiler, qemu-user
#      and file; only what is missing is installed.
#   2. target libraries (static archives of nng, mbedtls, sqlite3, zlib), in this order of
#      preference: Debian multiarch packages already installed (libnng-dev:ARCH ...); a
#      build-local sysroot unpacked before (build-sysroot-ARCH/); `apt-get install` of the
#      multiarch packages; and, when that fails (the ARCH package index of a mirror can lag
#      behind amd64, so the exact versions that Multi-Arch: same needs are missing), the
#      .debs fetched with `apt-get download` and unpacked with `dpkg -x` into
#      build-sysroot-ARCH/, with a generated cross file layered on cross/ARCH-linux.ini.
#   3. `meson setup build-cross-ARCH -Dstatic=true -Dtests=disabled`, ninja, strip into
#      build-cross-ARCH/dist/mqlite, `file` on it (must say statically linked).
#   4. the native test executables (built in $NATIVE_BUILD, default build-cross-native; CI
#      may pass its own build-ci, and CROSS_NATIVE_BUILT=1 when it built them already)
#      tests/integration/integ_* run one after another with MQLITE_BIN=the stripped ARM
#      broker and MQLITE_WRAPPER=qemu-ARM.
# Ends with one line "N passed, M failed": the integration test cases run under qemu (a
# failed step before them counts as one failure). Exit status 0 only if nothing failed.
# --build-only stops after step 3 (used by tests/boot/boot-armhf.sh).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

arch=${1:-}
build_only=false
[ "${2:-}" = --build-only ] && build_only=true
case $arch in
armhf)
  triplet=arm-linux-gnueabihf qemu=qemu-arm cross_ini=cross/armhf-linux.ini
  ;;
arm64 | aarch64)
  arch=arm64 triplet=aarch64-linux-gnu qemu=qemu-aarch64 cross_ini=cross/aarch64-linux.ini
  ;;
*)
  echo "usage: bash .ci/cross.sh armhf|arm64 [--build-only]" >&2
  echo "0 passed, 1 failed"
  exit 2
  ;;
esac
native=${NATIVE_BUILD:-build-cross-native}
build=build-cross-$arch
sysroot=$PWD/build-sysroot-$arch
jobs=${CROSS_TEST_JOBS:-2}
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
export DEBIAN_FRONTEND=noninteractive

t_all=$(date +%s)
t_step=$t_all
step() { # NAME: print the time the previous step took, then the new step's name
  local now
  now=$(date +%s)
  [ "$t_step" = "$t_all" ] || echo "   ($((now - t_step)) s)"
  t_step=$now
  echo "== cross $arch: $1"
}
give_up() { # MESSAGE
  echo "cross $arch: FAILED: $1" >&2
  echo "0 passed, 1 failed"
  exit 1
}
installed() { # PACKAGE...: all installed?
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || return 1
  done
}

# ---- 1. host packages ---------------------------------------------------------------
step "host packages"
bash .ci/deps.sh test || give_up ".ci/deps.sh test"
host_pkgs=(gcc-"$triplet" binutils-"$triplet" libc6-dev-"$arch"-cross qemu-user file)
if ! installed "${host_pkgs[@]}"; then
  echo "installing: ${host_pkgs[*]}"
  $SUDO apt-get update -qq || true
  $SUDO apt-get install -y -qq --no-install-recommends "${host_pkgs[@]}" >/dev/null ||
    give_up "apt-get install ${host_pkgs[*]}"
fi

# ---- 2. target libraries ------------------------------------------------------------
step "target libraries ($arch)"
target_pkgs=(libnng-dev:"$arch" libsqlite3-dev:"$arch" libmbedtls-dev:"$arch" zlib1g-dev:"$arch")
mode=
added_arch=false
if installed "${target_pkgs[@]}" pkgconf:"$arch"; then
  mode=multiarch
elif [ -f "$sysroot/.complete" ]; then
  mode=sysroot
else
  if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
    $SUDO dpkg --add-architecture "$arch" || give_up "dpkg --add-architecture $arch"
    added_arch=true
  fi
  if ! apt-cache policy "libnng-dev:$arch" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    echo "apt-get update (for the $arch package index)"
    $SUDO apt-get update -qq 2>&1 | grep -E '^(E|W):' || true
  fi
  log=$(mktemp)
  if $SUDO apt-get install -y -q --no-install-recommends "${target_pkgs[@]}" pkgconf:"$arch" \
    >"$log" 2>&1; then
    mode=multiarch
  else
    echo "apt-get install of the $arch packages failed; falling back to a sysroot:"
    grep -E '^ |^E:' "$log" | head -8
    rm -rf "$sysroot"
    mkdir -p "$sysroot/debs"
    if ! (cd "$sysroot/debs" && apt-get download "${target_pkgs[@]}") >"$log" 2>&1; then
      cat "$log"
      rm -f "$log"
      give_up "neither apt-get install nor apt-get download could get ${target_pkgs[*]}"
    fi
    for deb in "$sysroot"/debs/*.deb; do
      dpkg -x "$deb" "$sysroot" || give_up "dpkg -x $deb"
    done
    touch "$sysroot/.complete"
    mode=sysroot
    # Leave dpkg as it was: a lagging ARCH index would make every later `apt-get update`
    # exit 100 (and .ci/deps.sh with it). Nothing of ARCH is installed in this mode.
    if $added_arch; then
      $SUDO dpkg --remove-architecture "$arch" && $SUDO apt-get update -qq >/dev/null 2>&1
    fi
  fi
  rm -f "$log"
fi
cross_files=(--cross-file "$cross_ini")
if [ "$mode" = sysroot ]; then
  libdir=$sysroot/usr/lib/$triplet
  cat >"$sysroot/cross-overlay.ini" <<EOF
# generated by .ci/cross.sh: the target libraries unpacked into $sysroot
[binaries]
pkgconfig = 'pkg-config'

[properties]
sys_root = '$sysroot'
pkg_config_libdir = '$libdir/pkgconfig'
lib_dirs = ['$libdir']

[built-in options]
c_args = ['-I$sysroot/usr/include']
c_link_args = ['-L$libdir']
EOF
  cross_files+=(--cross-file "$sysroot/cross-overlay.ini")
fi
echo "target libraries: $mode"

# ---- 3. cross build -----------------------------------------------------------------
step "static cross build ($build)"
# meson runs its sanity check through qemu: the check program is dynamically linked.
export QEMU_LD_PREFIX=/usr/$triplet
# The project's default buildtype (debugoptimized, -O2 -g); strip drops the debug info.
setup_opts=(-Dstatic=true -Dtests=disabled -Dwerror=true)
key="$mode ${setup_opts[*]}"
if [ ! -f "$build/build.ninja" ] || [ "$(cat "$build/.setup-key" 2>/dev/null)" != "$key" ]; then
  rm -rf "$build"
  meson setup "$build" "${cross_files[@]}" "${setup_opts[@]}" >"$build.setup.log" 2>&1 || {
    tail -30 "$build.setup.log"
    give_up "meson setup $build"
  }
  echo "$key" >"$build/.setup-key"
fi
ninja -C "$build" mqlite >"$build.ninja.log" 2>&1 || {
  tail -30 "$build.ninja.log"
  give_up "ninja -C $build"
}
unset QEMU_LD_PREFIX
mkdir -p "$build/dist"
"$triplet-strip" -o "$build/dist/mqlite" "$build/mqlite" || give_up "strip"
bin=$PWD/$build/dist/mqlite
file "$bin"
file "$bin" | grep -q 'statically linked' || give_up "$bin is not statically linked"
echo "size: $(stat -c %s "$build/mqlite") bytes unstripped, $(stat -c %s "$bin") bytes stripped"
"$qemu" "$bin" --version || give_up "$qemu $bin --version"
if $build_only; then
  step "done"
  echo "cross $arch: built $bin"
  exit 0
fi

# ---- 4. integration suite under qemu -----------------------------------------------
step "native test executables ($native)"
if [ "${CROSS_NATIVE_BUILT:-}" = 1 ] && [ -f "$native/build.ninja" ]; then
  : # the caller built them (CI runs two arches at once: one ninja per build dir)
elif [ ! -f "$native/build.ninja" ]; then
  meson setup "$native" -Dwerror=true >"$native.setup.log" 2>&1 || {
    tail -30 "$native.setup.log"
    give_up "meson setup $native"
  }
fi
if [ "${CROSS_NATIVE_BUILT:-}" != 1 ]; then
  ninja -C "$native" >"$native.ninja.log" 2>&1 || {
    tail -30 "$native.ninja.log"
    give_up "ninja -C $native"
  }
fi

step "integration suite against the $arch broker under $qemu"
passed=0 failed=0
for exe in "$native"/tests/integration/integ_*; do
  if [ ! -f "$exe" ] || [ ! -x "$exe" ]; then continue; fi
  name=$(basename "$exe")
  out=$(mktemp)
  t0=$(date +%s)
  MQLITE_BIN=$bin MQLITE_WRAPPER=$qemu "$exe" --jobs="$jobs" >"$out" 2>&1
  rc=$?
  line=$(grep -a 'Synthesis: Tested:' "$out" | tail -1)
  tested=$(sed -n 's/.*Tested: \([0-9]*\).*/\1/p' <<<"$line")
  failing=$(sed -n 's/.*Failing: \([0-9]*\).*/\1/p' <<<"$line")
  crashing=$(sed -n 's/.*Crashing: \([0-9]*\).*/\1/p' <<<"$line")
  if [ -z "$tested" ]; then # no summary: the executable itself failed
    tested=1 failing=1 crashing=0
  fi
  bad=$((failing + crashing))
  [ $rc -ne 0 ] && [ $bad -eq 0 ] && bad=1
  ok=$((tested - failing - crashing))
  [ $ok -lt 0 ] && ok=0
  passed=$((passed + ok))
  failed=$((failed + bad))
  printf '%-22s %3d passed %3d failed  %3d s\n' "$name" "$ok" "$bad" $(($(date +%s) - t0))
  if [ $bad -ne 0 ]; then
    grep -a -E '^\[FAIL\]|Assertion Failed|^\[----\]   [^ ]' "$out" | head -20 | sed 's/^/    /'
  fi
  rm -f "$out"
done
[ $((passed + failed)) -gt 0 ] || give_up "no integration test executables in $native/tests/integration"
step "done"
echo "cross $arch: $(($(date +%s) - t_all)) s in all, broker $bin ($(stat -c %s "$bin") bytes)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
