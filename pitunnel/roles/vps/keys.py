"""The VPS's side of a key rotation: which keys of a Pi the tunnel account accepts, and which key the
live session holding each of that Pi's listeners logged in with.

The second comes from sshd's own log, as the reaper reads it: the session holding a listener is a
process of the tunnel account whose parent is its privileged monitor (root), and that monitor logged
"Accepted publickey for USER ... SHA256:..." (LogLevel VERBOSE in the Match block).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pitunnel.facts import Fact, file_fact, gather, read
from pitunnel.inventory import Listener, VpsSpec
from pitunnel.ops import STATE_DIR, q
from pitunnel.remote import Remote
from pitunnel.roles.vps.authorized import keys_path, parse_authorized_keys


@dataclass(frozen=True)
class VpsKeys:
    """What the VPS says of one Pi: its authorised keys (`type blob`, in the file's order), and for each
    of its listeners the fingerprint of the key the session holding it logged in with ("" when nobody
    listens there, "?" when the session's login is not in the log)."""

    authorised: tuple[str, ...]
    live: dict[Listener, str]


def live_fact(vps: VpsSpec, listens: Sequence[Listener]) -> Fact[dict[Listener, str]]:
    """listener -> fingerprint of the session holding it."""
    pairs = " ".join(f"{q(listener.spec)} {listener.port}" for listener in listens)
    # the tunnel user's grammar (inventory USER_RE: [a-z_][a-z0-9_-]*) holds nothing special to sed or the shell
    script = f"""set -- {pairs}
while [ $# -ge 2 ]; do
  spec=$1 port=$2; shift 2
  fp=
  for pid in $(ss -Htlnp "sport = :$port" | awk -v s="$spec" '$4 == s' | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
    mon=$(awk '$1 == "PPid:" {{print $2}}' /proc/$pid/status 2>/dev/null)
    [ -n "$mon" ] && [ "$(awk '$1 == "Uid:" {{print $2}}' /proc/$mon/status 2>/dev/null)" = 0 ] || continue
    got=$(journalctl -q -b -o cat _UID=0 _PID=$mon _COMM=sshd _COMM=sshd-session 2>/dev/null |
          sed -n 's/^Accepted publickey for {vps.tunnel_user} from .* ssh2: [A-Z0-9-]* \\(SHA256:[A-Za-z0-9+\\/]*\\)$/\\1/p' | tail -1)
    fp="$fp ${{got:-?}}"
  done
  echo "$spec$fp"
done
"""
    return Fact(f"live-keys:{','.join(listener.spec for listener in listens)}", script,
                lambda output: _live(output, listens))


def _live(output: str, listens: Sequence[Listener]) -> dict[Listener, str]:
    """Each listener asked about, by the line the script wrote for it (its spec first)."""
    asked = {listener.spec: listener for listener in listens}
    found = {}
    for line in output.splitlines():
        words = line.split()
        if words and words[0] in asked:
            # two sessions on one listener cannot be; if the log says so, it is not one known key
            found[asked[words[0]]] = words[1] if len(words) == 2 else ("" if len(words) == 1 else "?")
    return found


def read_keys(remote: Remote, vps: VpsSpec, pi: str, listens: Sequence[Listener]) -> VpsKeys:
    """One round trip: the Pi's authorised keys and who holds its listeners."""
    authorised, live = file_fact(keys_path()), live_fact(vps, listens)
    found = gather(remote, [authorised, live])
    state = found.value(authorised)
    text = state.content.decode(errors="replace") if state.exists else ""
    return VpsKeys(tuple(parse_authorized_keys(text).get(pi, [])), found.value(live))


# ------------------------------------------------------------------------ the VPS's own host keys
# `invoke rotate-vps-hostkey` stages new host keys here (root only) until every Pi pins them, then
# installs them: the private halves are made on the VPS and never leave it.
STAGED = f"{STATE_DIR}/host-keys-next"
OLD = f"{STATE_DIR}/host-keys-old"


@dataclass(frozen=True)
class HostKeys:
    """The host keys sshd offers now (`type blob`, what a Pi pins), and the staged next ones (None: nothing
    staged)."""

    current: tuple[str, ...]
    staged: tuple[str, ...] | None


def _host_keys(output: str) -> HostKeys:
    current: list[str] = []
    staged: list[str] = []
    seen = False
    for line in output.splitlines():
        tag, *key = line.split() or [""]
        if tag == "STAGED":
            seen = True
        elif len(key) >= 2 and tag in ("cur", "new"):
            keytype, blob, *_comment = key
            (current if tag == "cur" else staged).append(f"{keytype} {blob}")
    return HostKeys(tuple(current), tuple(staged) if seen else None)


# The one read of the VPS's host keys: provision pins `current` on its Pis, rotate-vps-hostkey reads both.
HOST_KEYS = Fact("vps-host-keys", f"""for f in /etc/ssh/ssh_host_*_key.pub; do [ -f "$f" ] && echo "cur $(cat "$f")"; done
if [ -d {STAGED} ]; then echo STAGED; for f in {STAGED}/ssh_host_*_key.pub; do [ -f "$f" ] && echo "new $(cat "$f")"; done; fi
true""", _host_keys)


def read_host_keys(remote: Remote) -> HostKeys:
    return read(remote, HOST_KEYS)


def stage_host_keys() -> str:
    """New keys of every type sshd has, made on the VPS in a root-only directory (a half-made set from an
    interrupted run is made again)."""
    return f"""set -e
rm -rf {STAGED}.tmp; mkdir -p -m 700 {STATE_DIR} {STAGED}.tmp
for f in /etc/ssh/ssh_host_*_key; do
  [ -f "$f" ] || continue
  t=${{f#/etc/ssh/ssh_host_}}; t=${{t%_key}}
  ssh-keygen -q -t "$t" -N '' -C "root@$(hostname)" -f {STAGED}.tmp/ssh_host_${{t}}_key
done
rm -rf {STAGED}; mv {STAGED}.tmp {STAGED}
"""


def install_host_keys(service: str) -> str:
    """The staged keys in place of sshd's (the old ones kept aside until the switch is proven), then sshd
    reloaded: it re-executes with the new keys and keeps every session, the Pis' tunnels too."""
    return f"""set -e
mkdir -p -m 700 {OLD}
for f in {STAGED}/ssh_host_*_key; do
  n=${{f##*/}}
  if [ -f /etc/ssh/$n ] && ! cmp -s /etc/ssh/$n "$f" && ! [ -f {OLD}/$n ]; then cp -a /etc/ssh/$n /etc/ssh/$n.pub {OLD}/; fi
  install -m 600 -o root -g root "$f" /etc/ssh/$n.tmp && mv -f /etc/ssh/$n.tmp /etc/ssh/$n
  install -m 644 -o root -g root "$f.pub" /etc/ssh/$n.pub.tmp && mv -f /etc/ssh/$n.pub.tmp /etc/ssh/$n.pub
done
sshd -t
systemctl reload {service}
"""


def restore_host_keys(service: str) -> str:
    """Back to the old keys (a fresh login failed after the switch)."""
    return f"""for f in {OLD}/ssh_host_*_key {OLD}/ssh_host_*_key.pub; do [ -f "$f" ] && cp -a "$f" /etc/ssh/; done
sshd -t && systemctl reload {service}
"""


def drop_staged() -> str:
    """The switch is done and proven: the staged copies and the old private keys go."""
    return f"rm -rf {STAGED} {OLD}; rmdir {STATE_DIR} 2>/dev/null || true\n"
