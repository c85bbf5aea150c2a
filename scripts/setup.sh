#!/usr/bin/env bash
# Installs what pitunnel and its lab need on a Debian machine (run as root), and the Python
# environment in .venv. Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(python3 python3-venv python3-pip openssh-client iproute2 util-linux iptables
          systemd-container debootstrap apt-cacher-ng ca-certificates wrk tcpdump
          sshpass pebble openssl curl nginx openssh-server chromium fonts-dejavu-core)  # sshpass: the Ansible side of
          # `invoke bench.provision` (its ansible-core: pip extra [bench]); pebble (and its pebble-challtestsrv): the lab's
          # ACME CA (lab/acme.py); nginx, openssh-server: the fast suite checks the generated configs with `nginx -t` and
          # `sshd -t`; chromium (headless) and a font: the status page's lab test reads the page and keeps a screenshot
# the services of these packages, if this run installs them: never started, and not enabled for the next boot
# (only their binaries are wanted: the lab runs its own, in its containers)
declare -A services=([apt-cacher-ng]="apt-cacher-ng.service" [nginx]="nginx.service"
                     [openssh-server]="ssh.service ssh.socket")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f '${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  # policy-rc.d (exit 101: no action allowed): no package's service starts during the install, on a machine with
  # systemd or without it
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  for p in "${missing[@]}"; do
    for unit in ${services[$p]:-}; do  # offline: systemctl edits the links, with or without a running systemd
      systemctl disable --quiet "$unit" 2>/dev/null || true
    done
    [ -z "${services[$p]:-}" ] || update-rc.d "${services[$p]%%.*}" disable >/dev/null 2>&1 || true
  done
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

# promtool, for the fast suite's alert rule tests (docs/alerts): the one binary, taken from Debian's `prometheus`
# package (apt-get download, dpkg-deb) into a cache and linked as .venv/bin/promtool. The package is not
# installed: no Prometheus server is set up, started or enabled on this machine.
if [ ! -x .venv/bin/promtool ]; then
  version=$(apt-cache show --no-all-versions prometheus 2>/dev/null | sed -n 's/^Version: //p')
  if [ -z "$version" ]; then
    apt-get update -q >/dev/null
    version=$(apt-cache show --no-all-versions prometheus | sed -n 's/^Version: //p')
  fi
  cache=/var/cache/pitunnel-tools
  [ "$(id -u)" -eq 0 ] || cache=${XDG_CACHE_HOME:-$HOME/.cache}/pitunnel-tools
  promtool="$cache/prometheus_$version/promtool"
  if [ ! -x "$promtool" ]; then
    echo "setup: fetching promtool from Debian's prometheus $version"
    mkdir -p "${promtool%/*}"
    ( deb=$(mktemp -d) && trap 'rm -rf "$deb"' EXIT
      chown _apt "$deb" 2>/dev/null || true  # apt downloads as _apt when root
      cd "$deb" && apt-get download -q "prometheus=$version" >/dev/null
      dpkg-deb --fsys-tarfile prometheus_*.deb | tar -xO ./usr/bin/promtool > "$promtool.tmp"
      chmod 755 "$promtool.tmp" && mv "$promtool.tmp" "$promtool" )
  fi
  ln -sfn "$promtool" .venv/bin/promtool
fi
echo "setup: ready (.venv/bin/invoke, .venv/bin/python -m pytest)"
