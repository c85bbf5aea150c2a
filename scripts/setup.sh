#!/usr/bin/env bash
# Installs what pitunnel and its lab need on a Debian machine (run as root), and the Python
# environment in .venv. Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(python3 python3-venv python3-pip openssh-client iproute2 util-linux iptables
          systemd-container debootstrap apt-cacher-ng ca-certificates wrk tcpdump
          sshpass pebble openssl curl)  # sshpass: the Ansible side of `invoke bench.provision` (its ansible-core:
          # pip extra [bench]); pebble (and its pebble-challtestsrv): the lab's ACME CA (lab/acme.py)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f '${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  # policy-rc.d: the package's own apt-cacher-ng service is not wanted; the lab runs its own
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
echo "setup: ready (.venv/bin/invoke, .venv/bin/python -m pytest)"
