"""pitunnel's quoting filters (pitunnel/quoting.py) for Ansible: site.yml renders pitunnel's own templates, which
quote every value with them. Ansible loads the filter_plugins folder next to the playbook by itself."""

from __future__ import annotations

from collections.abc import Callable

from pitunnel.quoting import FILTERS


class FilterModule:
    def filters(self) -> dict[str, Callable[[object], str]]:
        return dict(FILTERS)
