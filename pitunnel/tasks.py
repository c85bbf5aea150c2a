"""pitunnel's own tasks (TASKS): init, enroll, provision-vps, provision-pi, provision, verify, status, teardown, rotate-keys,
rotate-vps-hostkey, migrate and revoke.

Each takes the shared flags (pitunnel.taskkit.Flags) as one `flags` argument; tasks.py at the top of the
checkout puts them into `invoke`'s namespace, and pitunnel/console.py makes them the `pitunnel` command.
Exit codes: pitunnel.failures (docs/cli.md).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from invoke import Context, Exit

from . import failures
from .taskkit import COMMON, READ_ONLY, Flags, provisioning_task, run_play
from .inventory import Inventory
from .play import Play

T = TypeVar("T")
REACH_PI = "reach the Pi"  # verify's check for a Pi it could not reach (a REACH check: exit 4, not 2)


def _document(task: str, play: Play | None, code: int, **extra: Any) -> str:
    """The one JSON document of --json: per host its counts and steps, and the task's own `extra`."""
    hosts: dict[str, Any] = {}
    if play is not None:
        for name, recap in play.reporter.recaps.items():
            hosts[name] = {**recap.document(), "error": play.why.get(name)}
    return json.dumps({"task": task, "exit_code": code, "interrupted": code == failures.INTERRUPTED,
                       "hosts": hosts, **extra}, indent=2)


def _run(task: str, body: Callable[[Play], list[T]], flags: Flags, *, quiet: bool,
         judge: Callable[[list[T]], int], show: Callable[[list[T]], None],
         extra: Callable[[list[T]], dict[str, Any]], reinstate: bool = False, record: bool = True) -> None:
    """Run a play; print its rows (`show`) or, with --json, one document; exit with the play's code OR'ed with
    what `judge` makes of the rows (interrupted wins). `record`: taskkit.run_play's."""
    rows: list[T] = []
    held: list[Play] = []

    def collect(play: Play) -> None:
        held.append(play)
        rows.extend(body(play))

    code, error = 0, None
    try:
        run_play(collect, flags, quiet=quiet, out=sys.stderr if flags.json else None, reinstate=reinstate,
                 record=record)
    except Exit as exc:
        if not held and not flags.json:  # nothing ran: a usage or inventory error
            raise
        code = exc.code
        error = (exc.message or "").strip() or None if code == failures.USAGE else None
    if code not in (failures.INTERRUPTED, failures.USAGE) and held:
        code |= judge(rows)
    if flags.json:  # one document for every run, exit 3 included (its `error` says why nothing ran)
        print(_document(task, held[0] if held else None, code, error=error, **extra(rows)), flush=True)
    else:
        show(rows)
    if code:
        raise Exit(error, code=code)


@provisioning_task()
def provision_vps(c: Context, flags: Flags) -> None:
    """Set up the VPS: a locked-down tunnel account, its sshd Match block, and Nginx in front of the tunnels."""
    from pitunnel.roles.site import provision_vps

    run_play(provision_vps, flags)


@provisioning_task()
def provision_pi(c: Context, flags: Flags) -> None:
    """Set up each Pi: autossh, a key made on the Pi and authorised on the VPS, and the tunnel's unit."""
    from pitunnel.roles.site import provision_pi

    run_play(provision_pi, flags, reinstate=True)


@provisioning_task(flags=READ_ONLY + ("json",))
def verify(c: Context, flags: Flags) -> None:
    """Prove it end to end: SSH and HTTP reach each Pi through the VPS, and nothing more is open."""
    from pitunnel.roles.probes.report import REACH, PathReport, print_reports
    from pitunnel.roles.probes.verify import verify as run_verify

    def body(play: Play) -> list[PathReport]:
        reports = run_verify(play)
        for report in reports:  # a Pi (or its VPS) out of reach: say why, not only FAIL
            why = play.why.get(report.pi)
            if why or not report.checks:
                why = why or play.why.get(report.vps) or "it stopped before any check (see above)"
                report.add(REACH_PI, False, why, "fix what the line says, then run verify again")
        return reports

    def show(reports: list[PathReport]) -> None:
        print_reports(reports)
        if not reports or not all(r.passed for r in reports):
            print("\nverify: some checks failed (hints above)", file=sys.stderr)

    _run("verify", body, flags, quiet=True, show=show, record=False,
         judge=lambda reports: failures.FAILED if not reports or any(
             not c.passed and not c.name.startswith(REACH) for r in reports for c in r.checks) else 0,
         extra=lambda reports: {"pis": verify_document(reports)})


def verify_document(reports: list[Any]) -> dict[str, object]:
    """`verify --json`: per Pi, whether every path passed, and each path (the Pi through one VPS) with its checks."""
    pis: dict[str, dict[str, Any]] = {}
    for r in reports:
        pi = pis.setdefault(r.pi, {"passed": True, "paths": []})
        pi["passed"] = pi["passed"] and r.passed
        pi["paths"].append({"vps": r.vps, "passed": r.passed, "checks": [
            {"name": ch.name, "passed": ch.passed, "warning": ch.warning, "detail": ch.detail, "hint": ch.hint}
            for ch in r.checks]})
    return dict(pis)


@provisioning_task(flags=COMMON + ("json",))
def provision(c: Context, flags: Flags) -> None:
    """provision-vps and provision-pi in one run, with one recap.

    The Pis' base step (autossh, account, key) runs while the VPS converges; the rest once it is done."""
    from pitunnel.roles.site import provision as site

    def body(play: Play) -> list[None]:
        site(play)
        return []

    _run("provision", body, flags, quiet=False, judge=lambda rows: 0, show=lambda rows: None,
         extra=lambda rows: {"check": flags.check}, reinstate=True)


@provisioning_task(flags=READ_ONLY + ("json",),
                   help={"pis": "also log in to every selected Pi for its unit, ssh starts, restarts and last error "
                                "(done anyway for 20 Pis or fewer; past that, one read of each VPS alone)"},
                   shorts={"pis": ""})
def status(c: Context, flags: Flags, pis: bool = False) -> None:
    """Each tunnel: up or down, since when, how often ssh (re)connected, and the unit's restarts.

    Exits 2 when any tunnel is down (4 when a host is out of reach, 6 for both)."""
    from pitunnel.roles.probes.status import TunnelStatus, is_down, print_status
    from pitunnel.roles.probes.status import status as run_status

    def judge(rows: list[TunnelStatus]) -> int:
        return failures.FAILED if any(is_down(r) for r in rows) else 0

    _run("status", partial(run_status, pis_too=True) if pis else run_status, flags, quiet=True, judge=judge, show=print_status, record=False,
         extra=lambda rows: {"tunnels": [r.document() for r in rows]})


YES_HELP = "do not ask: on a terminal, {} lists per host what it removes and asks first (without one, it refuses " \
           "unless --yes)"


@provisioning_task(help={"purge": "also purge the packages the roles installed (autossh on the Pis; nginx, certbot and "
                                  "prometheus-node-exporter on the VPS) and pitunnel's certificates and ACME account; "
                                  "no short flag",
                         "yes": YES_HELP.format("teardown")},
                   shorts={"purge": "", "yes": "y"})
def teardown(c: Context, flags: Flags, purge: bool = False, yes: bool = False) -> None:
    """Remove everything provision-vps and provision-pi added, on both sides (packages stay unless --purge).

    Asks first on a terminal (per host, what goes); --yes to run it unattended."""
    from pitunnel.confirm import confirm, teardown_plan
    from pitunnel.roles.site import teardown as site

    run_play(lambda play: site(play, purge=purge), flags, vet=lambda inv: confirm(
        "teardown", teardown_plan(inv, flags.limit, purge=purge), yes=yes, check=flags.check))


@provisioning_task(help={"laptop_key": "instead: put this private key's .pub on every Pi, prove a login with it, "
                                        "then remove the laptop key pitunnel installed before"})
def rotate_keys(c: Context, flags: Flags, laptop_key: str = "") -> None:
    """New tunnel key per Pi, made on the Pi, the tunnel up throughout (or --laptop-key: the laptop's key).

    A rerun finishes an interrupted rotation. With --laptop-key NEW: the laptop's key on the Pis instead."""
    from pitunnel.roles.rotate import rotate_keys as site
    from pitunnel.roles.laptopkey import rotate_laptop_key

    if not laptop_key:
        run_play(site, flags)
        return
    new = Path(laptop_key).expanduser()
    problem = laptop_key_problem(new)
    if problem:
        raise Exit(f"--laptop-key {laptop_key}: {problem}", code=failures.USAGE)
    run_play(lambda play: rotate_laptop_key(play, new), flags)


def laptop_key_problem(key: Path) -> str | None:
    """Why this cannot be the laptop's new key, before any host is touched (None: it can)."""
    from pitunnel.sshkeys import BadPublicKey, parse_public_key

    pub = key.with_name(key.name + ".pub")
    if not key.is_file() or not pub.is_file():
        return f"needs the private key and {pub} (make them with ssh-keygen -t ed25519 -f {key})"
    if key.stat().st_mode & 0o077:
        return f"other users can read it: chmod 600 {key}"
    try:
        parse_public_key(pub.read_text())
    except BadPublicKey as exc:
        return f"{pub} is not a public key ({exc})"
    return None


@provisioning_task()
def rotate_vps_hostkey(c: Context, flags: Flags) -> None:
    """Planned VPS re-key: new host keys pinned on every Pi before sshd switches to them.

    The old keys are unpinned after; no tunnel drops."""
    from pitunnel.roles.rekey import rotate_vps_hostkey as site

    run_play(site, flags)


@provisioning_task(help={"to": "the VPS (defined in the inventory) the Pis move to",
                         "keep_old": "leave the old VPS's pitunnel side in place once no Pi is left on it",
                         "yes": YES_HELP.format("migrate")},
                   shorts={"to": "", "keep_old": "", "yes": "y"})
def migrate(c: Context, flags: Flags, to: str = "", keep_old: bool = False, yes: bool = False) -> None:
    """Move the Pis of one VPS to another: both paths up, each Pi verified through the new one, then the old left.

    The inventory is rewritten to the new VPS (hosts.yml.bak kept); a rerun completes an interrupted move.
    Asks first on a terminal (per host, what moves and goes); --yes to run it unattended."""
    from pitunnel.confirm import confirm, migrate_plan
    from pitunnel.roles.migrate import MigrateRefused
    from pitunnel.roles.migrate import migrate as site

    if not to:
        raise Exit("migrate needs --to NEWVPS (a VPS defined in the inventory)", code=failures.USAGE)
    try:
        run_play(lambda play: site(play, to, keep_old=keep_old), flags, vet=lambda inv: confirm(
            "migrate", migrate_plan(inv, flags.limit, to, keep_old=keep_old), yes=yes, check=flags.check))
    except MigrateRefused as exc:
        raise Exit(f"migrate: {exc}", code=failures.USAGE) from None


@provisioning_task(flags=("inventory", "check", "diff", "accept_new_host_keys", "accept_changed_host_key",
                          "prompt_for_sudo_password", "verbose", "forks"),
                   help={"pi": "the Pi (its name in the inventory) that is lost or stolen",
                         "release_ports": "instead: the Pi is gone from the inventory for good; forget its revocation "
                                          "and free its reserved ports for `remote_port: auto` (touches no host)"},
                   shorts={"pi": "", "release_ports": ""}, positional=("pi",))
def revoke(c: Context, flags: Flags, pi: str, release_ports: bool = False) -> None:
    """A lost or stolen Pi shut out of its VPSes: its keys off, its sessions ended, its routes closed.

    The Pi itself is not contacted. Its ports stay reserved, and every later run leaves it out, until it is
    provisioned again with a new key made on it (provision-pi --limit PI) or --release-ports."""
    from pitunnel.roles.revoke import revoke as site

    if release_ports:
        release(flags, pi)
        return
    run_play(lambda play: site(play, pi), flags, vet=lambda inv: vet_revoke(inv, pi))


def vet_revoke(inv: Inventory, pi: str) -> None:
    """revoke PI: PI must be a Pi of the inventory (revoked already or not)."""
    if pi in inv.pis or pi in inv.shut:
        return
    if pi in inv.revoked:
        raise Exit(f"revoke: {pi} is revoked (since {inv.revoked[pi].since}) and gone from {inv.path}: nothing of it is "
                   f"left on its VPSes. Fix: to free its ports, `pitunnel revoke {pi} --release-ports`", code=failures.USAGE)
    names = ", ".join([*inv.pis, *inv.shut]) or "none"
    raise Exit(f"revoke: no Pi named {pi!r} in {inv.path} (its Pis: {names}). Fix: give the name of one of them",
               code=failures.USAGE)


def release(flags: Flags, pi: str) -> None:
    """revoke PI --release-ports: the record of a revoked Pi that is gone from the inventory, and its reserved
    ports, dropped on the laptop alone (the inventory may clash with those ports meanwhile: that is why)."""
    from pitunnel import yamlsrc
    from pitunnel.taskkit import resolve_inventory
    from pitunnel.inventory import InventoryError, load_inventory
    from pitunnel.inventory.revoked import read_revoked, revoked_file, write_revoked

    flags.vet()
    path, _ = resolve_inventory(flags.inventory or None)
    file = revoked_file(path)
    everything, problems = read_revoked(file)
    records = {n: r for n, r in everything.items() if not r.ended}
    if problems:
        raise Exit("\n".join(map(str, problems)), code=failures.USAGE)
    try:
        data = yamlsrc.load_file(path).data
    except (OSError, yamlsrc.YamlSyntaxError, yamlsrc.YamlRefused) as exc:
        raise Exit(f"revoke --release-ports: cannot read {path} ({exc}). Fix: give the inventory with -i FILE",
                   code=failures.USAGE) from None
    pis = data.get("pis") if isinstance(data, dict) else None
    if isinstance(pis, dict) and pi in pis:
        raise Exit(f"revoke --release-ports: {pi} is still in {path}. Fix: remove pis.{pi} from it first (or bring "
                   f"{pi} back instead: provision-pi --limit {pi} once it has a new key)", code=failures.USAGE)
    if pi not in records:
        raise Exit(f"revoke --release-ports: {file} holds no revoked Pi named {pi!r} (revoked: "
                   f"{', '.join(records) or 'none'}). Fix: give the name of one of them", code=failures.USAGE)
    ports = "; ".join(f"{vps}: {', '.join(str(p) for p in on.values())}" for vps, on in records[pi].ports.items())
    if flags.check:
        print(f"would release {pi}: its revocation forgotten, its ports free for `auto` again ({ports})")
        return
    write_revoked(file, {n: r for n, r in everything.items() if n != pi})
    print(f"released {pi}: its revocation forgotten, its ports free for `auto` again ({ports})")
    try:
        load_inventory(path)  # the ports file rewritten without them
    except InventoryError as exc:
        raise Exit(f"{exc}\n(the ports file is rewritten at the next run once the inventory is valid)",
                   code=failures.USAGE) from None


ENROLL_FLAGS = ("inventory", "check", "diff", "accept_new_host_keys", "accept_changed_host_key",
                "prompt_for_sudo_password", "verbose", "forks")


@provisioning_task(flags=ENROLL_FLAGS,
                   help={"pi": "the Pi (its name in the inventory; it needs no address) to enrol",
                         "boot": "the folder to write the first-boot files to: the card's mounted boot partition "
                                 "(or any folder to copy them from)",
                         "ssid": "the Wi-Fi network the Pi joins at first boot (none: a wired Pi)",
                         "country": "the two-letter country code of that Wi-Fi (its regulatory domain: GB, DE, US...)",
                         "passphrase_file": "a file holding the Wi-Fi passphrase on its first line (without it, "
                                            "it is asked for; never on the command line)",
                         "expires": "how long the VPS accepts the Pi's bootstrap key: N days, hours or minutes "
                                    "(7d, 12h, 90m; default 7d); provision-pi replaces it before then"},
                   shorts={"pi": "", "boot": "b", "ssid": "", "country": "", "passphrase_file": "", "expires": ""},
                   positional=("pi",))
def enroll(c: Context, flags: Flags, pi: str, boot: str = "", ssid: str = "", country: str = "",
           passphrase_file: str = "", expires: str = "7d") -> None:
    """Write a Pi's first-boot files (cloud-init) so it enrols itself far away: no LAN, no trust on first use.

    Its login user gets your key, its host key is made here and pinned, and a bootstrap tunnel key opens its
    tunnel to each of its VPSes, which accept that key (authorised by this run) until it expires. Then
    provision-pi reaches it through that tunnel. The files hold private keys: they are written mode 600."""
    import getpass
    from datetime import datetime, timezone

    from pitunnel.enroll import EnrollRefused, expiry, vet, wifi
    from pitunnel.roles.enroll import Request
    from pitunnel.roles.enroll import enroll as site

    if not boot:
        raise Exit("enroll needs --boot DIR: the card's mounted boot partition (or a folder)", code=failures.USAGE)
    asked: list[Request] = []

    def check(inv: Inventory) -> None:
        try:
            when = expiry(expires, datetime.now(timezone.utc))
            spec = vet(inv, pi, Path(boot).expanduser())
            asked.append(Request(spec, Path(boot).expanduser(), wifi(ssid, country, passphrase_file, getpass.getpass),
                                 when))
        except EnrollRefused as exc:
            raise Exit(f"enroll: {exc}", code=failures.USAGE) from None

    run_play(lambda play: site(play, asked[0]), flags, vet=check)


@provisioning_task(flags=("inventory",), help={"inventory": "where to write it (default $PITUNNEL_INVENTORY, else "
                                                          "./inventory/hosts.yml); an existing file is never overwritten"})
def init(c: Context, flags: Flags) -> None:
    """Write a first inventory to fill in: one VPS, one Pi, an ssh and an http tunnel, every line commented.

    It loads as written (documentation addresses); change the lines marked CHANGE. Touches no host."""
    from importlib.resources import files

    from pitunnel.taskkit import DEFAULT_INVENTORY, ENV_INVENTORY

    flags.vet()
    path = Path(flags.inventory or os.environ.get(ENV_INVENTORY) or DEFAULT_INVENTORY)
    if path.exists() or path.is_symlink():
        raise Exit(f"init: {path} exists already, and init never overwrites a file. Fix: edit it, or give another "
                   "path with -i FILE", code=failures.USAGE)
    text = files("pitunnel.inventory").joinpath("starter.yml").read_text()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x") as out:  # "x": never over a file that appeared meanwhile
            out.write(text)
    except OSError as exc:
        raise Exit(f"init: cannot write {path} ({exc.strerror or exc})", code=failures.USAGE) from None
    print(f"wrote {path}: change its lines marked CHANGE (your VPS's and your Pi's addresses, users, the app's "
          f"port), then `pitunnel provision-vps -a`, `pitunnel provision-pi -a -p`, `pitunnel verify`"
          + (f" (each with -i {path})" if flags.inventory else ""))


@provisioning_task(flags=("inventory", "check"),
                   help={"write": "keep them in ~/.ssh/pitunnel.conf (mode 600) and add one `Include` line for it at the "
                                  "top of ~/.ssh/config (a copy of it kept); with --check, show what would change",
                         "check": "with --write: write nothing, show what would change"},
                   shorts={"write": "w"})
def ssh_config(c: Context, flags: Flags, write: bool = False) -> None:
    """Print OpenSSH Host blocks for every Pi and its VPSes: routes through the tunnels, keys, pinned host keys.

    With --write, `ssh pi1`, scp and rsync reach each Pi by name from anywhere. Touches no host."""
    from pitunnel.sshcli import ssh_config as body

    body(flags, write=write)


@provisioning_task(flags=("inventory",), help={"pi": "the Pi (its name in the inventory), or a VPS of one"},
                   shorts={"pi": ""}, positional=("pi",))
def ssh(c: Context, flags: Flags, pi: str) -> None:
    """Log in to a Pi with OpenSSH by its tunnels, from anywhere: `pitunnel ssh pi1 [-- CMD]`.

    The other VPS when one is down; every host key checked against pitunnel's. ssh's own exit code."""
    from pitunnel.sshcli import command_after_dashes, ssh as body

    body(flags, pi, command_after_dashes(sys.argv))


TASKS = (init, provision_vps, provision_pi, provision, verify, status, teardown, rotate_keys, rotate_vps_hostkey, migrate, revoke,
         enroll, ssh_config, ssh)
