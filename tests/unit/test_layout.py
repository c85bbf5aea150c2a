"""Where things live (issue 12): the product package ships no lab, the product never imports it, and
whatever uses the lab (lab tests, benchmarks, tasks) goes through the lab's public API, lab/__init__.py."""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

import lab

ROOT = Path(__file__).resolve().parents[2]


def imports(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line, module, names) for every import in a file; names empty for `import module`."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module, [alias.name for alias in node.names]


def files(*roots: str) -> list[Path]:
    found = [p for r in roots for p in ((ROOT / r).rglob("*.py") if (ROOT / r).is_dir() else [ROOT / r])]
    assert found, roots
    return found


def test_the_wheel_has_no_lab() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    shipped = [*setuptools["packages"], *setuptools.get("package-data", {})]
    assert "pitunnel" in shipped and not [p for p in shipped if p.split(".")[0] == "lab" or ".lab" in p]


def test_the_wheel_has_every_package_of_the_product() -> None:
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "pitunnel").rglob("__init__.py")}
    assert found == set(packages)


def test_the_product_never_imports_the_lab() -> None:
    found = [f"{path.relative_to(ROOT)}:{line} {module}" for path in files("pitunnel")
             for line, module, _ in imports(path) if module.split(".")[0] == "lab"]
    assert found == []


def test_lab_users_import_only_its_public_api() -> None:
    public = set(lab.__all__)
    parts = {p.stem for p in (ROOT / "lab").glob("*.py")} - {"__init__"}
    found = []
    for path in files("tasks.py", "tests/conftest.py", "tests/lab", "benchmarks"):
        entry = path == ROOT / "tasks.py"  # the command line takes the lab's tasks, lab/tasks.py
        for line, module, names in imports(path):
            inside = module.startswith("lab.") and not (entry and module == "lab.tasks")
            unknown = sorted(set(names) - public - ({"tasks"} if entry else set())) if module == "lab" else []
            if inside or unknown:
                found.append(f"{path.relative_to(ROOT)}:{line} {module} {unknown or ''}")
        for node in ast.walk(ast.parse(path.read_text())):  # lab.machine.exec_in(...) after `import lab`
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "lab"
                    and node.attr in parts):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} lab.{node.attr}")
    assert found == []


def test_the_public_api_exports_what_it_lists() -> None:
    assert all(hasattr(lab, name) for name in lab.__all__)
    assert lab.INVENTORY == ROOT / "inventory" / "lab.yml"


def test_no_role_imports_another() -> None:
    """Each role describes its own host only: what crosses between hosts goes through roles/site.py, as
    the values in roles/contract.py (issue 12)."""
    roles = {p.name for p in (ROOT / "pitunnel" / "roles").iterdir() if (p / "defaults.yml").exists()}
    assert roles == {"laptop", "pi", "vps"}  # laptop: the ssh config `pitunnel ssh-config` writes on the laptop
    found = []
    for role in sorted(roles):
        for path in files(f"pitunnel/roles/{role}"):
            for line, module, names in imports(path):
                parts = module.removeprefix("pitunnel.").split(".")
                reached = {parts[1]} if parts[0] == "roles" and len(parts) > 1 else set(names) if module == "pitunnel.roles" else set()
                if reached - {role, "contract"}:
                    found.append(f"{path.relative_to(ROOT)}:{line} {module} {names}")
    assert found == []


def test_one_import_name_for_the_roles() -> None:
    """`roles/` at the top of the checkout is a link to pitunnel/roles (the layout the user asked for); the
    code imports it only as `pitunnel.roles`, so no module is loaded twice and the wheel has no `roles`."""
    assert (ROOT / "roles").is_symlink() and (ROOT / "roles").resolve() == ROOT / "pitunnel" / "roles"
    found = [f"{path.relative_to(ROOT)}:{line} {module}" for root in ("pitunnel", "lab", "benchmarks", "tests", "tasks.py")
             for path in files(root) for line, module, _ in imports(path) if module.split(".")[0] == "roles"]
    assert found == []
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert [p for p in packages if p.split(".")[0] != "pitunnel"] == []
