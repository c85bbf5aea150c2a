"""The Pi role on disk (roles/pi: defaults.yml, templates), one object for every module of the role."""

from __future__ import annotations

from pitunnel.role import Role

ROLE = Role("pi")
PI_DEFAULTS = ROLE.defaults
