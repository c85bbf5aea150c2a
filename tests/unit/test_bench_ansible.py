"""Unit tests for benchmarks/ansible: the pitunnel inventory as an Ansible inventory, and that the
variables it carries render pitunnel's templates exactly as pitunnel does (pure: tmp_path only)."""

from __future__ import annotations

import base64
import importlib.util
import textwrap
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from benchmarks.ansible import inventory as ai
from benchmarks.ansible import run as ansible_run
from pitunnel.inventory import Inventory, load_inventory
from pitunnel.ops import File
from pitunnel.role import Role
from pitunnel.roles.pi.steps import tunnel_ops
from pitunnel.roles.vps.steps import converge_ops
LAPTOP_PUB = "ssh-ed25519 " + base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes(32)).decode()
VPS_HOST_KEYS = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHva6ee4ekTAawH0SqI5CoAvuEvPaN4hfyg5Q+vEb9p1"]


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    (tmp_path / "laptop").write_text("private\n")
    (tmp_path / "laptop.pub").write_text(LAPTOP_PUB + " me@laptop\n")
    (tmp_path / "pi2.password").write_text("secret\n")
    path = tmp_path / "hosts.yml"
    path.write_text(textwrap.dedent(f"""
        settings:
          known_hosts: {tmp_path}/known_hosts
          laptop_key: {tmp_path}/laptop
        defaults:
          key: {tmp_path}/laptop
        vps:
          vps:
            address: 198.18.0.10
            port: 12345
            user: root
            client_alive_interval: 7
        pis:
          pi1:
            address: 198.19.1.2
            user: pi
            server_alive_interval: 20
            tunnels:
              ssh: {{type: ssh, remote_port: 12346, public: true}}
              api: {{type: http, local_port: 8080, path: /pi1/}}
          pi2:
            address: 198.19.2.2
            user: pi
            password_file: {tmp_path}/pi2.password
            tunnels:
              ssh: {{type: ssh, remote_port: 12347}}
              web: {{type: http, server_name: pi2.example.com, websocket: true, client_max_body_size: 1m}}
        """))
    return load_inventory(path)


def hosts(doc: dict[str, Any], group: str) -> dict[str, dict[str, Any]]:
    return doc["all"]["children"][group]["hosts"]


def ansible_filters() -> dict[str, Any]:
    """The filters Ansible loads from the filter_plugins folder next to site.yml."""
    path = Path(ai.__file__).parent / "filter_plugins" / "pitunnel_quoting.py"
    spec = importlib.util.spec_from_file_location("pitunnel_quoting", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    filters: dict[str, Any] = module.FilterModule().filters()
    return filters


def render(template: str, variables: dict[str, Any], **extra: Any) -> str:
    """As Ansible's template module renders with the playbook's options (trim_blocks, lstrip_blocks) and the
    playbook's filter plugins."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Role(template.split("/")[0]).templates)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters.update(ansible_filters())
    return env.get_template(template.split("/")[-1]).render({**variables, **extra})


def files_of(ops: list[Any]) -> dict[str, str]:
    return {op.path: op.content for op in ops if isinstance(op, File) and isinstance(op.content, str)}


def test_groups_and_connection(inv: Inventory) -> None:
    doc = ai.ansible_inventory(inv)
    assert list(hosts(doc, "vpses")) == ["vps"]
    assert list(hosts(doc, "pis")) == ["pi1", "pi2"]
    vps = hosts(doc, "vpses")["vps"]
    assert (vps["ansible_host"], vps["ansible_port"], vps["ansible_user"]) == ("198.18.0.10", 12345, "root")
    assert "StrictHostKeyChecking=yes" in vps["ansible_ssh_common_args"]
    assert f"UserKnownHostsFile={inv.settings.known_hosts}" in vps["ansible_ssh_common_args"]
    pi2 = hosts(doc, "pis")["pi2"]
    assert "pi2.password" in pi2["ansible_password"] and "secret" not in pi2["ansible_password"]
    assert "ansible_password" not in hosts(doc, "pis")["pi1"]


def test_vps_routes_and_listens(inv: Inventory) -> None:
    vps = hosts(ai.ansible_inventory(inv), "vpses")["vps"]
    assert vps["listens"] == ["127.0.0.1:*", "0.0.0.0:*"]
    assert [r["name"] for r in vps["path_routes"]] == ["api"]
    assert [r["server_name"] for r in vps["name_routes"]] == ["pi2.example.com"]
    assert vps["location_files"] == ["pi1_api.conf"] and vps["site_files"] == ["pitunnel-pi2_web.conf"]
    assert vps["client_alive_interval"] == 7


def test_key_options_match_pitunnel(inv: Inventory) -> None:
    pi1 = hosts(ai.ansible_inventory(inv), "pis")["pi1"]
    assert pi1["authorized_options"] == ('restrict,port-forwarding,permitlisten="0.0.0.0:12346",'
                                         'permitlisten="127.0.0.1:20000",command="/bin/false"')
    assert pi1["laptop_key_line"] == LAPTOP_PUB + " pitunnel-laptop"
    assert pi1["vps_known_name"] == "[198.18.0.10]:12345"
    assert pi1["forwards"] == ["0.0.0.0:12346:127.0.0.1:22", "127.0.0.1:20000:127.0.0.1:8080"]


def test_vps_templates_render_as_pitunnel_does(inv: Inventory) -> None:
    variables = hosts(ai.ansible_inventory(inv), "vpses")["vps"]
    want = files_of(converge_ops(inv, inv.vps["vps"]))
    assert render("vps/sshd.conf.j2", variables) == want[variables["sshd_dropin"]]
    assert render("vps/reaper.service.j2", variables) == want[variables["reaper_unit_path"]]
    assert render("vps/reaper.sh.j2", variables) == want[variables["reaper_path"]]
    assert render("vps/nginx-http.conf.j2", variables) == want[variables["nginx_conf"]]
    assert render("vps/nginx-default-site.conf.j2", variables) == want[variables["nginx_default_site"]]
    for t in variables["path_routes"]:
        assert render("vps/nginx-location.conf.j2", variables, t=t) == \
            want[f"{variables['nginx_locations_dir']}/{t['file_stem']}.conf"]
    for t in variables["name_routes"]:
        assert render("vps/nginx-server.conf.j2", variables, t=t) == \
            want[f"{variables['nginx_sites_dir']}/pitunnel-{t['file_stem']}.conf"]


@pytest.mark.parametrize("pi", ["pi1", "pi2"])
def test_pi_templates_render_as_pitunnel_does(inv: Inventory, pi: str) -> None:
    variables = hosts(ai.ansible_inventory(inv), "pis")[pi]
    want = files_of(tunnel_ops(inv, inv.pis[pi], inv.vps["vps"], VPS_HOST_KEYS))
    assert render("pi/ssh_config.j2", variables) == want[f"{variables['vps_config_dir']}/ssh_config"]
    assert render("pi/pitunnel.service.j2", variables) == want[variables["unit_path"]]
    assert render("pi/watchdog.sh.j2", variables) == want[variables["watchdog_script"]]
    assert render("pi/watchdog.service.j2", variables) == \
        want[f"/etc/systemd/system/{variables['watchdog_template']}"]
    known = "".join(f"{variables['vps_known_name']} {k}\n" for k in VPS_HOST_KEYS)
    assert known == want[f"{variables['vps_config_dir']}/known_hosts"]


def test_unsupported_features_are_refused(inv: Inventory, tmp_path: Path) -> None:
    text = inv.path.read_text().replace("server_alive_interval: 20", "disable_password_login: true")
    assert text != inv.path.read_text()
    (tmp_path / "other.yml").write_text(text)
    with pytest.raises(ai.NotEquivalent, match="disable_password_login"):
        ai.ansible_inventory(load_inventory(tmp_path / "other.yml"))


def test_dump_has_no_yaml_aliases(inv: Inventory) -> None:
    text = ai.dump(inv)
    assert "&id" not in text and "*id" not in text
    assert yaml.safe_load(text) == ai.ansible_inventory(inv)


def test_playbook_uses_only_existing_templates(inv: Inventory) -> None:
    plays = yaml.safe_load(ansible_run.PLAYBOOK.read_text())
    sources = [task[module]["src"] for play in plays for task in play.get("tasks", []) + play.get("handlers", [])
               for module in task if module == "ansible.builtin.template"]
    assert len(sources) >= 10
    folders = ai.ansible_inventory(inv)["all"]["vars"]  # where the roles keep their templates
    assert folders == {"vps_templates": str(Role("vps").templates), "pi_templates": str(Role("pi").templates)}
    from_roles = 0
    for src in sources:
        for name, folder in folders.items():
            src = src.replace("{{ %s }}" % name, folder)
        path = ansible_run.HERE / src  # absolute for a role's template; else the playbook's own (per Pi lines)
        if "{{" in str(path):  # looped: the loop names the files
            continue
        assert path.exists(), src
        from_roles += Path(src).is_absolute()
    assert from_roles == 11  # every config file pitunnel's roles render, from the roles' own templates


def test_missing_sshpass_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ansible_run, "find_playbook_command", lambda: "/usr/bin/ansible-playbook")
    monkeypatch.setattr(ansible_run.shutil, "which", lambda name: None)
    with pytest.raises(ansible_run.Missing, match="apt-get install -y sshpass"):
        ansible_run.preflight(needs_password=True)
    assert ansible_run.preflight(needs_password=False) == "/usr/bin/ansible-playbook"


def test_missing_ansible_names_the_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(ansible_run.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(ansible_run.shutil, "which", lambda name: None)
    with pytest.raises(ansible_run.Missing, match=r"pip install -e '\.\[bench\]'"):
        ansible_run.preflight(needs_password=False)


def test_authorized_keys_and_known_hosts_templates_match_pitunnel(inv: Inventory) -> None:
    from pitunnel.facts import FileState
    from pitunnel.roles.vps.authorized import authorized_keys

    doc = ai.ansible_inventory(inv)
    pubs = {"pi1": "ssh-ed25519 AAAAkey1 pitunnel:pi1", "pi2": "ssh-ed25519 AAAAkey2 pitunnel:pi2"}
    hostvars = {**hosts(doc, "vpses"), **hosts(doc, "pis")}
    for name, pub in pubs.items():
        hostvars[name] = {**hostvars[name], "tunnel_pub": {"content": base64.b64encode(pub.encode()).decode()}}
    hostvars["vps"] = {**hostvars["vps"], "vps_host_keys": {"stdout_lines": VPS_HOST_KEYS}}
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(ansible_run.HERE / "templates")),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True)
    env.filters["b64decode"] = lambda text: base64.b64decode(text).decode()
    rendered = env.get_template("authorized_keys.j2").render(groups={"pis": ["pi1", "pi2"]}, hostvars=hostvars,
                                                             inventory_hostname="vps")
    want = authorized_keys(inv, inv.vps["vps"], {n: " ".join(p.split()[:2]) for n, p in pubs.items()})
    assert rendered == want.wanted(FileState(exists=False))
    assert rendered.count("\n") == 2
    known = env.get_template("known_hosts.j2").render(hostvars=hostvars, **hosts(doc, "pis")["pi1"])
    assert known == files_of(tunnel_ops(inv, inv.pis["pi1"], inv.vps["vps"], VPS_HOST_KEYS))["/etc/pitunnel/vps/known_hosts"]
