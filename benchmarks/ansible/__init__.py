"""An Ansible playbook that does what `provision-vps` + `provision-pi` do, for `invoke bench.provision`.

Used only for comparison: `site.yml` renders pitunnel's own templates (roles/*/templates) with the
same variables, which `inventory.py` derives from a pitunnel inventory; `run.py` runs it.
"""
