"""The tunnel account's authorized_keys: each Pi's key lines, written so that no key is two Pis', read back,
and the keys of revoked Pis that sshd refuses (RevokedKeys)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pitunnel.facts import FileState
from pitunnel.inventory import Inventory, PiPath, VpsSpec
from pitunnel.inventory.revoked import records
from pitunnel.ops import File, Op
from pitunnel.report import Reporter
from pitunnel.sshkeys import BadPublicKey, parse_public_key
from pitunnel.roles.vps.role import VPS_DEFAULTS
from pitunnel.roles.vps.sessions import SessionsEnded

KEY_MARKER = "pitunnel:"
BOOTSTRAP_MARKER = "pitunnel-bootstrap:"  # a Pi's bootstrap key (pitunnel enroll): until provision-pi or its expiry


def authorized_line(vps: VpsSpec, pi: PiPath, pubkey: str, *, expires: str | None = None) -> str:
    """A Pi's key may only open its own listeners (`pi`: its path through `vps`), and nothing else: no command,
    pty, agent or -L. `expires` (YYYYMMDDHHMMSSZ): a bootstrap key, refused by sshd for logins after then."""
    listens = "".join(f'permitlisten="{t.listener.spec}",' for t in pi.tunnels)
    forwarding = f"port-forwarding,{listens}" if pi.tunnels else ""  # no tunnels: no forwarding at all
    options = f'restrict,{forwarding}command="{VPS_DEFAULTS["forced_command"]}"'
    options += f',expiry-time="{expires}"' if expires else ""
    keytype, blob = pubkey.split()[:2]
    return f"{options} {keytype} {blob} {BOOTSTRAP_MARKER if expires else KEY_MARKER}{pi.name}"


def bootstrap_lines(text: str) -> dict[str, str]:
    """Each Pi's bootstrap key line in the tunnel account's authorized_keys (the last one, if several)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and words[-1].startswith(BOOTSTRAP_MARKER):
            found[words[-1][len(BOOTSTRAP_MARKER):]] = line
    return found


@dataclass(frozen=True)
class SharedKey:
    """One key (`type blob`) that two Pis or more would hold on one VPS: sshd would take the first line
    with it, so one Pi could open, or block, another's listeners. `kept`: the Pi it stays with, the one
    the file lists it for alone (it was that Pi's first); None when the file cannot tell (it lists it for
    none of them, or for several): then it is written for none."""

    key: str
    pis: tuple[str, ...]
    kept: str | None

    @property
    def refused(self) -> tuple[str, ...]:
        return tuple(p for p in self.pis if p != self.kept)

    def why(self, pi: str, vps: str) -> str:
        """The one line that refuses `pi`'s use of the key, naming the other Pi(s)."""
        others = ", ".join(p for p in self.pis if p != pi)
        try:
            shown = parse_public_key(self.key).fingerprint
        except BadPublicKey:
            shown = self.key.split()[-1][:20] + "..."
        rederive = "remove that .pub there and rerun: it is derived again from the Pi's own private key"
        if self.kept is not None:
            return (f"refused: its tunnel key {shown} is {self.kept}'s (authorised for {self.kept} on {vps} first); "
                    f"nothing written for {pi}, {self.kept} keeps its key. Fix: look into {pi}, whose tunnel key's "
                    f".pub is not its own key ({rederive})")
        return (f"refused: its tunnel key {shown} is offered for {others} too, and {vps} cannot tell whose it is; "
                f"written for neither. Fix: find the Pi whose tunnel key's .pub is not its own key ({rederive}); "
                "the other then gets its key")


def settle_keys(before: Mapping[str, Sequence[str]],
                wanted: Mapping[str, Sequence[str]]) -> tuple[dict[str, list[str]], list[SharedKey]]:
    """Each Pi's keys to write (`wanted`, each key `type blob`), so that no key is any two Pis': a key that
    several would hold stays with the one the file (`before`) lists it for alone, and the others get what
    the file has for them (nothing new is written for them); when the file cannot tell, none of them has
    it. Returns the keys to write and each key refused."""
    result = {n: list(dict.fromkeys(keys)) for n, keys in wanted.items()}
    taken: dict[str, set[str]] = {n: set() for n in result}  # keys each Pi may never have in this file
    shared: list[SharedKey] = []
    for _ in range(1 + sum(len(keys) for keys in result.values())):  # each round settles one key for good
        holders: dict[str, list[str]] = {}
        for name, keys in result.items():
            for k in keys:
                holders.setdefault(k, []).append(name)
        clash = next(((k, names) for k, names in holders.items() if len(names) > 1), None)
        if clash is None:
            break
        key, names = clash
        first = [n for n in names if key in before.get(n, ())]
        found = SharedKey(key, tuple(names), first[0] if len(first) == 1 else None)
        shared.append(found)
        for name in found.refused:
            taken[name].add(key)
            result[name] = [k for k in dict.fromkeys(before.get(name, ())) if k not in taken[name]]
    return result, shared


def _keys_wanted(inv: Inventory, vps: VpsSpec, new_keys: Mapping[str, str | Sequence[str]], drop: frozenset[str],
                 state: FileState) -> tuple[dict[str, PiPath], dict[str, list[str]], list[SharedKey]]:
    pis = {pi.name: pi for pi in inv.pis_on(vps) if pi.name not in drop}
    before = parse_authorized_keys(state.content.decode(errors="replace") if state.exists else "")
    given = {n: [k] if isinstance(k, str) else list(k) for n, k in new_keys.items()}
    # a revoked key never comes back, whoever offers it (docs/operations.md)
    revoked = {k.line for r in records(inv).values() for k in r.keys}
    wanted = {n: [line for line in (" ".join(k.split()[:2]) for k in given.get(n, before.get(n, [])))
                  if line not in revoked] for n in pis}
    keys, shared = settle_keys(before, wanted)
    return pis, keys, shared


def authorized_keys(inv: Inventory, vps: VpsSpec, new_keys: Mapping[str, str | Sequence[str]],
                    drop: frozenset[str] = frozenset(), bootstrap: Mapping[str, str | None] | None = None) -> File:
    """The tunnel account's authorized_keys: a line per key of each Pi of this VPS (one, or two while its
    key is rotated), options always from the inventory, the keys kept from the file unless `new_keys`
    brings that Pi's (one key, or all of them in order); Pis no longer listed go. A key is never written
    for two Pis (settle_keys; shared_keys says which were refused). A Pi's bootstrap key line (`pitunnel
    enroll`) is kept as the file has it, unless `bootstrap` gives that Pi's new line, or None: none."""

    def render(state: FileState) -> str:
        pis, keys, _ = _keys_wanted(inv, vps, new_keys, drop, state)
        kept = bootstrap_lines(state.content.decode(errors="replace") if state.exists else "")
        boot = {n: (bootstrap or {}).get(n, kept.get(n)) for n in pis}
        return "".join(authorized_line(vps, pis[n], k) + "\n" for n in pis for k in keys.get(n, [])) + \
            "".join(f"{line}\n" for n, line in boot.items() if line)

    return File(keys_path(), render, owner=vps.tunnel_user, group=vps.tunnel_user,
                mode=0o600, title="authorized keys of the Pis")


def keys_ops(inv: Inventory, vps: VpsSpec, new_keys: Mapping[str, str | Sequence[str]],
             drop: frozenset[str] = frozenset(), bootstrap: Mapping[str, str | None] | None = None) -> list[Op]:
    """authorized_keys as `authorized_keys` writes it, then every live session of a key it no longer
    authorises ended (roles/vps/sessions.py): a key that leaves the file takes its sessions with it, in the
    same converge, before the step reports success. Every step that writes the file uses this."""
    keys = authorized_keys(inv, vps, new_keys, drop, bootstrap)
    return [keys, SessionsEnded(vps.tunnel_user, keys)]


def keys_path() -> str:
    return f"{VPS_DEFAULTS['tunnel_home']}/.ssh/authorized_keys"


def shared_keys(inv: Inventory, vps: VpsSpec, new_keys: Mapping[str, str | Sequence[str]], state: FileState,
                drop: frozenset[str] = frozenset()) -> list[SharedKey]:
    """The keys authorized_keys(...) refuses for the file in `state`: two Pis' (or more) each."""
    return _keys_wanted(inv, vps, new_keys, drop, state)[2]


def refuse_shared(reporter: Reporter, vps: str, shared: Sequence[SharedKey]) -> frozenset[str]:
    """A line for each Pi refused a key another Pi holds or offers; the Pis refused."""
    refused = []
    for found in shared:
        for pi in found.refused:
            reporter.line(pi, "failed", f"tunnel key on {vps}", found.why(pi, vps))
            refused.append(pi)
    return frozenset(refused)


def parse_authorized_keys(text: str) -> dict[str, list[str]]:
    """Each Pi's keys (`type blob`) in the tunnel account's authorized_keys, in the file's order."""
    keys: dict[str, list[str]] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and words[-1].startswith(KEY_MARKER):
            keys.setdefault(words[-1][len(KEY_MARKER):], []).append(f"{words[-3]} {words[-2]}")
    return keys


def revoked_lines(inv: Inventory) -> list[str]:
    """The keys every revoked Pi had (revocations in force or ended), as sshd's RevokedKeys file lists them."""
    return [f"{k.line} pitunnel-revoked:{r.pi}\n" for r in records(inv).values() for k in r.keys]


def revoked_keys_file(inv: Inventory) -> File:
    """sshd's RevokedKeys file for the tunnel account, before the Match block names it (sshd refuses every key of
    the account if the file it names cannot be read); never made while no key is revoked."""
    lines = revoked_lines(inv)
    return File(VPS_DEFAULTS["revoked_keys"], "".join(dict.fromkeys(lines)), create=bool(lines),
                title="revoked keys sshd refuses (RevokedKeys)")
