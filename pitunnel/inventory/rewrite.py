"""Changing one value of the user's inventory in place: the text around it (comments, order, quoting of
everything else) kept byte for byte, a copy of the file as it was beside it (hosts.yml -> hosts.yml.bak).

Used by `invoke migrate`, which must leave the inventory naming the Pis' new VPS (or the next provision would
move them back)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from pitunnel import yamlsrc

_PLAIN = re.compile(r"[^\s#,\[\]{}]+")


class CannotRewrite(ValueError):
    """The value is not one this module can change in place (it says what to do by hand)."""


def backup_path(inventory: Path) -> Path:
    return inventory.with_name(inventory.name + ".bak")


def pi_vps_rewritten(text: str, pi: str, new: str) -> str:
    """`text` with `pis.<pi>.vps` set to `new`: its value must be written on the Pi as one name (plain or
    quoted), or a list of one name (`[old]`, or a block list of one item); the rest of the text is kept."""
    doc = yamlsrc.load(text)
    data = doc.data if isinstance(doc.data, dict) else {}
    pis = data.get("pis")
    entry = pis.get(pi) if isinstance(pis, dict) else None
    if not isinstance(entry, dict) or "vps" not in entry:
        raise CannotRewrite(f"pis.{pi} does not write its own `vps:` (it comes from defaults, or there is one VPS): "
                            f"add `vps: {new}` under pis.{pi} by hand")
    value = entry["vps"]
    path: yamlsrc.KeyPath = ("pis", pi, "vps")
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        path = path + (0,)
    elif not isinstance(value, str):
        raise CannotRewrite(f"pis.{pi}.vps is not a single VPS: write `vps: {new}` under pis.{pi} by hand")
    where = doc.values.get(path)
    if where is None:
        raise CannotRewrite(f"pis.{pi}.vps: its place in the file is unknown: write `vps: {new}` there by hand")
    lines = text.splitlines(keepends=True)
    line, column = where[0] - 1, where[1] - 1
    current = lines[line]
    quote = current[column] if current[column] in "'\"" else ""
    if quote:
        end = current.index(quote, column + 1) + 1
    else:
        found = _PLAIN.match(current, column)
        if found is None:
            raise CannotRewrite(f"pis.{pi}.vps: cannot find its value on line {line + 1}: write `vps: {new}` by hand")
        end = found.end()
    lines[line] = current[:column] + (f"{quote}{new}{quote}" if quote else new) + current[end:]
    result = "".join(lines)
    again = yamlsrc.load(result).data
    assert isinstance(again, dict) and again["pis"][pi]["vps"] in (new, [new]), "rewrite changed the wrong text"
    return result


def set_pi_vps(inventory: Path, pis: list[str], new: str) -> list[str]:
    """Set `vps: new` for these Pis in the inventory file (those not already on it); a backup of the file as it
    was first (`.bak`, replaced each time the file changes). Returns the Pis whose value changed."""
    text = inventory.read_text(encoding="utf-8")
    changed = []
    for pi in pis:
        doc = yamlsrc.load(text).data
        if isinstance(doc, dict) and isinstance(doc.get("pis"), dict) and isinstance(doc["pis"].get(pi), dict) \
                and doc["pis"][pi].get("vps") in (new, [new]):
            continue
        text = pi_vps_rewritten(text, pi, new)
        changed.append(pi)
    if changed:
        shutil.copy2(inventory, backup_path(inventory))
        temporary = inventory.with_name(inventory.name + ".tmp")
        temporary.write_text(text, encoding="utf-8")
        shutil.copymode(inventory, temporary)
        os.replace(temporary, inventory)
    return changed
