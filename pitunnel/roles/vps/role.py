"""The VPS role on disk (roles/vps: defaults.yml, templates), one object for every module of the role."""

from __future__ import annotations

from pitunnel.role import Role

ROLE = Role("vps")
VPS_DEFAULTS = ROLE.defaults
