#!/usr/bin/env bash
# Build the Debian package of mqlite for one architecture:
#
#   bash packaging/deb/build.sh amd64|armhf|arm64 [OUTDIR]     (OUTDIR default: dist/)
#
# writes OUTDIR/mqlite_VERSION_ARCH.deb and prints its path as the last line.
#
# Our own script around `dpkg-deb --build --root-owner-group`, not debhelper: the armhf and
# arm64 packages hold the static binaries of .ci/cross.sh's cross build (the ones its
# integration suite runs under qemu), and a debhelper build for a foreign architecture would
# want the target-architecture build dependencies (libnng-dev:armhf ...) installed through
# multiarch, which a lagging mirror index often cannot provide (see docs/deploy.md). This
# way all three packages build on one amd64 Debian 12 machine with the host's packages only.
#
# - amd64: a native, dynamically linked release build in build-deb-amd64/build
#   (meson setup --prefix=/usr --sysconfdir=/etc --localstatedir=/var -Dtests=disabled
#   -Dbuildtype=release -Dstrip=true, with dpkg-buildflags' hardening flags), staged with `DESTDIR=... meson install`. Depends is
#   computed by dpkg-shlibdeps, run with a three-line stub debian/control beside the staging
#   tree (build-deb-amd64/debian/control): it needs no real debian/ source tree.
# - armhf, arm64: `bash .ci/cross.sh ARCH --build-only` builds (or reuses) the static,
#   stripped broker in build-cross-ARCH/dist/mqlite; cross.sh builds only the `mqlite`
#   target, so mqlite-passwd is built here in the same build dir (`ninja mqlite-passwd`,
#   the same static link) and stripped with the same cross strip. The rest of the tree (the
#   configuration, the init script, the systemd unit, the man pages) is staged by
#   `meson install` of the native build dir in build-deb-amd64/build, and the two binaries
#   are then replaced by the static ARM ones: the three packages hold the same files. No
#   shared-library Depends (the binaries are static).
#
# Version: meson.build's project version. When HEAD is not the tag vVERSION (a snapshot
# build), "~gitN.HASH" is appended (N = commits in HEAD's history, HASH = the abbreviated
# commit, ".dirty" if the work tree has changes): "~" sorts before the release, so
# 0.1.0~git143.01ae681 < 0.1.0 and the release package upgrades every snapshot of it, and N
# makes later snapshots sort after earlier ones on a linear main branch. MQLITE_DEB_VERSION
# overrides the whole version.
#
# What the package holds besides `meson install`'s files: /etc/init.d/S50mqlite installed
# as /etc/init.d/mqlite (its Debian name, for update-rc.d), man pages gzipped,
# /usr/share/doc/mqlite/copyright (LICENSE in Debian's machine-readable copyright format),
# changelog.gz (a one-entry Debian changelog naming the commit) and NEWS.md.gz, and the
# maintainer scripts of packaging/deb/.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
here=$root/packaging/deb

die() {
  echo "packaging/deb/build.sh: $*" >&2
  exit 1
}

arch=${1:-}
outdir=${2:-dist}
case $arch in
amd64) ;;
armhf) triplet=arm-linux-gnueabihf ;;
arm64) triplet=aarch64-linux-gnu ;;
*) die "usage: packaging/deb/build.sh amd64|armhf|arm64 [OUTDIR]" ;;
esac
if [ "$arch" = amd64 ] && [ "$(dpkg --print-architecture)" != amd64 ]; then
  die "the amd64 package is a native build: run it on an amd64 machine"
fi
bash .ci/deps.sh package # the build packages and dpkg-dev, when missing
for tool in dpkg-deb dpkg-shlibdeps meson ninja gzip; do
  command -v "$tool" >/dev/null || die "$tool not found (dpkg-dev, meson, ninja-build, gzip)"
done
umask 022

# ---- version ------------------------------------------------------------------------
upstream=$(sed -n "s/^[[:space:]]*version[[:space:]]*:[[:space:]]*'\([^']*\)'.*/\1/p" meson.build | head -n 1)
[ -n "$upstream" ] || die "no project version found in meson.build"
if [ -n "${MQLITE_DEB_VERSION:-}" ]; then
  version=$MQLITE_DEB_VERSION
elif git rev-parse --git-dir >/dev/null 2>&1; then
  if [ "$(git describe --tags --exact-match HEAD 2>/dev/null)" = "v$upstream" ]; then
    version=$upstream
  else
    version="$upstream~git$(git rev-list --count HEAD).$(git rev-parse --short=7 HEAD)"
    git diff --quiet HEAD -- 2>/dev/null || version=$version.dirty
  fi
else
  version=$upstream
fi
echo "== mqlite $version ($arch)" >&2
maintainer="mqlite maintainers <mqlite-maintainers@example.org>" # a placeholder team address

# ---- native build and staging -------------------------------------------------------
# The native build dir: the amd64 package's binaries, and every package's file layout.
native=build-deb-amd64/build
setup_opts=(--prefix=/usr --sysconfdir=/etc --localstatedir=/var -Dtests=disabled
  -Dbuildtype=release -Dstrip=true -Dsystemdunitdir=/lib/systemd/system)
# Debian's hardening flags (stack protector, _FORTIFY_SOURCE, relro, bindnow, PIE), as a
# Debian package build gets them; meson reads CFLAGS/CPPFLAGS/LDFLAGS at setup.
export DEB_BUILD_MAINT_OPTIONS=hardening=+all
CFLAGS=$(dpkg-buildflags --get CFLAGS) CPPFLAGS=$(dpkg-buildflags --get CPPFLAGS)
LDFLAGS=$(dpkg-buildflags --get LDFLAGS)
export CFLAGS CPPFLAGS LDFLAGS
key="${setup_opts[*]} CFLAGS=$CFLAGS CPPFLAGS=$CPPFLAGS LDFLAGS=$LDFLAGS"
if [ ! -f "$native/build.ninja" ] || [ "$(cat "$native/.deb-setup-key" 2>/dev/null)" != "$key" ]; then
  rm -rf "$native"
  mkdir -p build-deb-amd64
  meson setup "$native" "${setup_opts[@]}" >build-deb-amd64/setup.log 2>&1 || {
    tail -30 build-deb-amd64/setup.log >&2
    die "meson setup $native failed (log: build-deb-amd64/setup.log)"
  }
  echo "$key" >"$native/.deb-setup-key"
fi
unset CFLAGS CPPFLAGS LDFLAGS DEB_BUILD_MAINT_OPTIONS
ninja -C "$native" >build-deb-amd64/ninja.log 2>&1 || {
  tail -30 build-deb-amd64/ninja.log >&2
  die "ninja -C $native failed (log: build-deb-amd64/ninja.log)"
}

work=$root/build-deb-$arch
stage=$work/debian/mqlite # dpkg-shlibdeps expects the package's files under debian/PACKAGE
rm -rf "$work/debian"
mkdir -p "$stage"
# the stub dpkg-shlibdeps needs: it only learns the package's name (its directory) from it
printf 'Source: mqlite\n\nPackage: mqlite\nArchitecture: any\n' >"$work/debian/control"
DESTDIR=$stage meson install -C "$native" --no-rebuild >"$work/install.log" 2>&1 || {
  tail -30 "$work/install.log" >&2
  die "meson install -C $native failed (log: $work/install.log)"
}

# ---- cross builds: the static binaries ----------------------------------------------
if [ "$arch" != amd64 ]; then
  cross=build-cross-$arch
  echo "== static cross build: bash .ci/cross.sh $arch --build-only (log: $work/cross.log)" >&2
  bash .ci/cross.sh "$arch" --build-only >"$work/cross.log" 2>&1 || {
    tail -30 "$work/cross.log" >&2
    die ".ci/cross.sh $arch --build-only failed (log: $work/cross.log)"
  }
  # meson may re-run its sanity check (a dynamic test program) through qemu.
  QEMU_LD_PREFIX=/usr/$triplet ninja -C "$cross" mqlite-passwd >"$work/ninja-passwd.log" 2>&1 || {
    tail -30 "$work/ninja-passwd.log" >&2
    die "ninja -C $cross mqlite-passwd failed (log: $work/ninja-passwd.log)"
  }
  "$triplet-strip" -o "$cross/dist/mqlite-passwd" "$cross/mqlite-passwd" || die "$triplet-strip mqlite-passwd"
  for exe in "$cross/dist/mqlite" "$cross/dist/mqlite-passwd"; do
    file "$exe" | grep -q 'statically linked' || die "$exe is not statically linked: $(file "$exe")"
  done
  install -m 755 "$cross/dist/mqlite" "$stage/usr/sbin/mqlite"
  install -m 755 "$cross/dist/mqlite-passwd" "$stage/usr/bin/mqlite-passwd"
fi

# The .comment section (compiler versions) goes, as dh_strip removes it.
if [ "$arch" = amd64 ]; then strip_tool="strip"; else strip_tool="$triplet-strip"; fi
"$strip_tool" --remove-section=.comment --remove-section=.note \
  "$stage/usr/sbin/mqlite" "$stage/usr/bin/mqlite-passwd" || die "$strip_tool --remove-section=.comment"

# ---- the Debian layout --------------------------------------------------------------
[ -f "$stage/etc/init.d/S50mqlite" ] || die "meson install put no etc/init.d/S50mqlite into $stage"
mv "$stage/etc/init.d/S50mqlite" "$stage/etc/init.d/mqlite"
for f in usr/sbin/mqlite usr/bin/mqlite-passwd etc/mqlite/mqlite.conf lib/systemd/system/mqlite.service; do
  [ -f "$stage/$f" ] || die "meson install put no $f into $stage"
done
[ -d "$stage/etc/mqlite/conf.d" ] || die "meson install made no etc/mqlite/conf.d in $stage"
find "$stage/usr/share/man" -type f ! -name '*.gz' -exec gzip -9n {} +
doc=$stage/usr/share/doc/mqlite
mkdir -p "$doc"
# The version has no Debian revision (a native package): changelog.gz is in Debian's
# changelog format (one entry for this build, dated by the commit), NEWS.md beside it.
gzip -9nc NEWS.md >"$doc/NEWS.md.gz"
if git rev-parse --git-dir >/dev/null 2>&1; then
  when=$(git log -1 --format=%cD HEAD)
  what="built from git commit $(git rev-parse --short=12 HEAD)"
else
  when=$(date -R -r meson.build)
  what="built from a source tree without git"
fi
cat >"$work/changelog" <<EOF
mqlite ($version) unstable; urgency=medium

  * mqlite $upstream, $what. The changes that a user
    notices are in /usr/share/doc/mqlite/NEWS.md.gz.

 -- $maintainer  $when
EOF
gzip -9nc "$work/changelog" >"$doc/changelog.gz"
# LICENSE (MIT) in Debian's copyright format: its copyright line, its text as the licence.
holder=$(sed -n 's/^Copyright (c) //p' LICENSE | head -n 1)
[ -n "$holder" ] || die "no 'Copyright (c) ...' line in LICENSE"
{
  echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
  echo "Upstream-Name: mqlite"
  echo "Comment: built from the mqlite repository by packaging/deb/build.sh"
  echo
  echo "Files: *"
  echo "Copyright: $holder"
  echo "License: Expat"
  echo
  echo "License: Expat"
  # the text after the copyright line; blank lines become " ."
  sed '1,/^Copyright (c) /d' LICENSE | sed '/./,$!d' | sed 's/^$/./; s/^/ /'
} >"$doc/copyright"
# A static package: a lintian override for what a static build is bound to say.
if [ "$arch" != amd64 ]; then
  mkdir -p "$stage/usr/share/lintian/overrides"
  cat >"$stage/usr/share/lintian/overrides/mqlite" <<'EOF'
# The armhf/arm64 packages hold static binaries on purpose (gateways without the shared
# libraries; see packaging/deb/build.sh).
mqlite: statically-linked-binary [usr/bin/mqlite-passwd]
mqlite: statically-linked-binary [usr/sbin/mqlite]
EOF
fi

# Owners and modes: root:root by --root-owner-group; directories 755, files 644, the
# programs and the init script 755.
find "$stage" -type d -exec chmod 755 {} +
find "$stage" -type f -exec chmod 644 {} +
chmod 755 "$stage/usr/sbin/mqlite" "$stage/usr/bin/mqlite-passwd" "$stage/etc/init.d/mqlite"

# ---- control files ------------------------------------------------------------------
mkdir -p "$stage/DEBIAN" # also how dpkg-shlibdeps finds the package's root
if [ "$arch" = amd64 ]; then
  # dpkg-shlibdeps: the packages (with versions) of every shared library the binaries
  # need, from the libraries' shlibs/symbols files.
  depends=$(cd "$work" && dpkg-shlibdeps -O debian/mqlite/usr/sbin/mqlite debian/mqlite/usr/bin/mqlite-passwd) ||
    die "dpkg-shlibdeps failed"
  depends=${depends#shlibs:Depends=}
  [ -n "$depends" ] || die "dpkg-shlibdeps found no shared-library dependency"
  depends="$depends, adduser | passwd"
else
  # static: no shared libraries; the postinst creates the user with adduser or useradd.
  depends="adduser | passwd"
fi
installed_size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<EOF
Package: mqlite
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: $depends
Section: net
Priority: optional
Description: small MQTT 3.1.1 and 5.0 broker for Linux gateways
 mqlite is an MQTT broker written in C for ARM Linux gateways: MQTT 3.1.1 and
 5.0 over TCP, TLS, WebSocket and secure WebSocket, persistent sessions and
 retained messages in SQLite, password files, mosquitto-style ACLs and bridges
 to cloud brokers, configured with mosquitto.conf syntax.
 .
 As installed it listens on 127.0.0.1 and ::1 port 1883 only and lets local
 clients in without a password (mosquitto 2.0's local-only mode); add
 listeners and users in /etc/mqlite/conf.d/. It runs as the system user
 mqlite, under systemd (mqlite.service) or a sysvinit/busybox init script.
EOF
install -m 644 "$here/conffiles" "$stage/DEBIAN/conffiles"
for s in postinst prerm postrm; do
  install -m 755 "$here/$s" "$stage/DEBIAN/$s"
done
(cd "$stage" && find . -type f ! -path './DEBIAN/*' ! -path './etc/*' -printf '%P\0' |
  LC_ALL=C sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"

# ---- build ----------------------------------------------------------------------------
mkdir -p "$outdir"
deb=$outdir/mqlite_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >&2 || die "dpkg-deb --build $stage failed"
echo "== $(stat -c %s "$deb") bytes; Depends: $depends" >&2
echo "$deb"
