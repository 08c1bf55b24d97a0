#!/usr/bin/env bash
# Install the Debian 12 packages mqlite needs, only when something is missing.
#   bash .ci/deps.sh build   compiler, meson, libraries (enough to build and run mqlite)
#   bash .ci/deps.sh package also dpkg-dev (packaging/deb/build.sh)
#   bash .ci/deps.sh test    also criterion, clang (fuzzing), mosquitto and its clients,
#                            python3-paho-mqtt (the test suite's real clients), openssl (test
#                            certificates), chromium and node/npm (the browser test: MQTT.js
#                            from the npm registry)
set -euo pipefail
want=(gcc libc6-dev meson ninja-build pkg-config libnng-dev libsqlite3-dev libmbedtls-dev)
if [ "${1:-build}" = package ]; then
  want+=(dpkg-dev)
fi
if [ "${1:-build}" = test ]; then
  want+=(libcriterion-dev clang clang-format git mosquitto mosquitto-clients python3 python3-paho-mqtt dpkg-dev
         openssl chromium groff-base)
  # A Node.js from elsewhere (e.g. NodeSource's nodejs, which bundles npm and conflicts with
  # Debian's npm package) is fine: Debian's nodejs and npm only when npm is not there.
  command -v npm >/dev/null 2>&1 || want+=(nodejs npm)
fi
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
