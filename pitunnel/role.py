"""A role on disk: pitunnel/roles/NAME/defaults.yml (settings) and .../templates/*.j2 (config text).

The top-level `roles/` of the checkout is a link to pitunnel/roles: one place, one import name
(`pitunnel.roles`), and nothing called `roles` in site-packages."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import jinja2
import yaml

from pitunnel.quoting import FILTERS

ROLES_DIR = Path(__file__).resolve().parent / "roles"


class Role:
    def __init__(self, name: str) -> None:
        self.name = name
        self.path = ROLES_DIR / name
        self.templates = self.path / "templates"

    @cached_property
    def defaults(self) -> dict[str, Any]:
        return yaml.safe_load((self.path / "defaults.yml").read_text()) or {}

    @cached_property
    def _env(self) -> jinja2.Environment:
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(self.templates),
                                 undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                 trim_blocks=True, lstrip_blocks=True, autoescape=False)
        env.filters.update(FILTERS)  # every value is quoted where it lands: `{{ address | sh }}` (pitunnel/quoting.py)
        return env

    def render(self, template: str, **context: Any) -> str:
        return self._env.get_template(template).render({**self.defaults, **context})
