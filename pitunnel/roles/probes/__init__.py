"""The site's probes: `verify` and `status`, read from the laptop across hosts, one module per kind of probe.

They know both roles (as roles/site.py does) and change nothing anywhere. `verify.py` proves each path (a Pi
through one VPS) and `status.py` tables each tunnel; what they read on a host is a typed fact, parsed once:
`unit.py` (the tunnel's unit and watchdog on the Pi), `exposure.py` (what the VPS listens on, and what the
tunnel key is refused), `login.py` (SSH through the VPS lands on the Pi), `http_route.py` (HTTP through
Nginx reaches the Pi's app), `report.py` (verify's checks and how they print).
"""
