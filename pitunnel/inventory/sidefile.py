"""The files pitunnel keeps beside an inventory (hosts.ports.yml, hosts.revoked.yml): read with the inventory's
own YAML reader, so a problem names the file and line, and written whole, atomically, under a header."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from pitunnel import yamlsrc

from .errors import Problem, Problems


def read_side_file(file: Path, what: str, fix: str) -> tuple[Problems | None, Any, list[Problem]]:
    """(report, data, problems) of `file`, each problem with `fix`: no file, (None, None, []); a file that cannot
    be read or parsed, (None, None, [its problem]); else its data (None when empty) and a report to add to."""
    if not file.exists():
        return None, None, []
    try:
        doc = yamlsrc.load_file(file)
    except OSError as e:
        return None, None, [Problem(file, None, None, "", f"cannot read {what}: {e.strerror}", fix)]
    except yamlsrc.YamlSyntaxError as e:
        return None, None, [Problem(file, e.line, e.column, "", f"YAML syntax error: {e.message}", fix)]
    except yamlsrc.YamlRefused as e:
        return None, None, [Problem(file, e.line, e.column, "", e.message, fix)]
    report = Problems(file, doc)
    report.problems = [replace(problem, fix=fix) for problem in report.problems]
    return report, doc.data, report.problems


def write_side_file(file: Path, header: str, data: Any, **dump: Any) -> None:
    """`header` then `data` as YAML, in place of `file` at once (a reader never sees half of it)."""
    temporary = file.with_name(file.name + ".tmp")
    temporary.write_text(header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False, **dump),
                         encoding="utf-8")
    os.replace(temporary, file)
