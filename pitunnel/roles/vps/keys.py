"""The VPS's side of a key rotation: which keys of a Pi the tunnel account accepts, and which key the
live session holding each of that Pi's listeners logged in with.

The second comes from sshd's own log, as the reaper reads it: the session holding a listener is a
process of the tunnel account whose parent is its privileged monitor (root), and that monitor logged
"Accepted publickey for USER ... SHA256:..." (LogLevel VERBOSE in the Match block).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pitunnel.facts import Fact, file_fact, gather
from pitunnel.inventory import VpsSpec
from pitunnel.ops import q
from pitunnel.remote import Remote
from pitunnel.roles.vps.steps import D, authorised_keys


@dataclass(frozen=True)
class VpsKeys:
    """What the VPS says of one Pi: its authorised keys (`type blob`, in the file's order), and for each
    of its listeners the fingerprint of the key the session holding it logged in with ("" when nobody
    listens there, "?" when the session's login is not in the log)."""

    authorised: tuple[str, ...]
    live: dict[str, str]


def live_fact(vps: VpsSpec, listens: Sequence[str]) -> Fact[dict[str, str]]:
    """listen spec -> fingerprint of the session holding it."""
    specs = " ".join(q(s) for s in listens)
    script = f"""for spec in {specs}; do
  fp=
  for pid in $(ss -Htlnp "sport = :${{spec##*:}}" | awk -v s="$spec" '$4 == s' | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
    mon=$(awk '$1 == "PPid:" {{print $2}}' /proc/$pid/status 2>/dev/null)
    [ -n "$mon" ] && [ "$(awk '$1 == "Uid:" {{print $2}}' /proc/$mon/status 2>/dev/null)" = 0 ] || continue
    got=$(journalctl -q -b -o cat _UID=0 _PID=$mon _COMM=sshd _COMM=sshd-session 2>/dev/null |
          sed -n 's/^Accepted publickey for {vps.tunnel_user} from .* ssh2: [A-Z0-9-]* \\(SHA256:[A-Za-z0-9+\\/]*\\)$/\\1/p' | tail -1)
    fp="$fp ${{got:-?}}"
  done
  echo "$spec$fp"
done
"""
    return Fact(f"live-keys:{','.join(listens)}", script, _live)


def _live(output: str) -> dict[str, str]:
    found = {}
    for line in output.splitlines():
        words = line.split()
        if words:
            # two sessions on one listener cannot be; if the log says so, it is not one known key
            found[words[0]] = words[1] if len(words) == 2 else ("" if len(words) == 1 else "?")
    return found


def keys_file() -> str:
    return f"{D['tunnel_home']}/.ssh/authorized_keys"


def read_keys(remote: Remote, vps: VpsSpec, pi: str, listens: Sequence[str]) -> VpsKeys:
    """One round trip: the Pi's authorised keys and who holds its listeners."""
    authorised, live = file_fact(keys_file()), live_fact(vps, listens)
    found = gather(remote, [authorised, live])
    state = found.value(authorised)
    text = state.content.decode(errors="replace") if state.exists else ""
    return VpsKeys(tuple(authorised_keys(text).get(pi, [])), found.value(live))
