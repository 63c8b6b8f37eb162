"""A Git checkout runs its own commit: the collection resolves from the checkout through collections/ next to the
playbooks (no installation, no collections_path), the links stay out of the tarball, and the root ansible.cfg is the
production one (host keys checked) while the testbed's lives under tests/."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))
LINKS = {
    "collections/ansible_collections/edgeslim/jetson": "../../..",
    "playbooks/collections": "../collections",
}
PLAYBOOKS = ["slim.yml", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "playbooks").glob("*.yml"))]


def syntax_check(playbook: str, tmp_path: Path, cwd: Path) -> subprocess.CompletedProcess:
    # Ansible's defaults (an empty ansible.cfg) and an empty collections path: only adjacency can resolve the FQCNs.
    (tmp_path / "ansible.cfg").write_text("")
    (tmp_path / "empty").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_CONFIG=str(tmp_path / "ansible.cfg"), ANSIBLE_COLLECTIONS_PATH=str(tmp_path / "empty"))
    return subprocess.run(
        [PLAYBOOK, "-i", "localhost,", "--syntax-check", playbook],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(("link", "target"), sorted(LINKS.items()))
def test_links_are_committed_relative_links_to_the_root(link, target):
    staged = subprocess.run(["git", "ls-files", "-s", link], cwd=ROOT, capture_output=True, text=True, check=True)
    assert staged.stdout.startswith("120000 "), f"{link} is not a committed symlink: {staged.stdout!r}"
    assert os.readlink(ROOT / link) == target
    assert (ROOT / link).resolve() in (ROOT, ROOT / "collections")


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_every_playbook_resolves_the_collection_from_the_checkout(playbook, tmp_path):
    result = syntax_check(playbook, tmp_path, ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_without_the_links_the_playbooks_do_not_resolve(tmp_path):
    # The same check fails on a copy of the checkout without its collections/ links: the links are what resolves.
    copy = tmp_path / "copy"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for name in (f.decode() for f in files if f):
        if name.startswith(("collections/", "playbooks/collections")) or not (ROOT / name).is_file():
            continue
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_bytes((ROOT / name).read_bytes())
    for playbook in ("slim.yml", "playbooks/rollback.yml"):
        result = syntax_check(playbook, tmp_path, copy)
        assert result.returncode != 0, f"{playbook} resolved edgeslim.jetson without the links"
        assert "edgeslim.jetson" in result.stdout + result.stderr


def test_the_links_and_run_configuration_stay_out_of_the_tarball():
    ignored = yaml.safe_load((ROOT / "galaxy.yml").read_text())["build_ignore"]
    for entry in ("collections", "playbooks/collections", "ansible.cfg", "slim.yml"):
        assert entry in ignored


def read_cfg(path: Path) -> configparser.ConfigParser:
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(path)
    return cfg


def test_production_config_checks_host_keys():
    cfg = read_cfg(ROOT / "ansible.cfg")
    assert cfg.getboolean("defaults", "host_key_checking") is True
    assert "StrictHostKeyChecking=no" not in cfg.get("ssh_connection", "ssh_args")
    assert "UserKnownHostsFile=/dev/null" not in cfg.get("ssh_connection", "ssh_args")
    assert not cfg.has_option("defaults", "inventory")  # the simulated inventory is the testbed's


def test_testbed_config_is_selected_by_the_makefile_and_scripts():
    assert read_cfg(ROOT / "tests" / "ansible.cfg").get("defaults", "inventory") == "../inventories/sim"
    assert "export ANSIBLE_CONFIG := $(CURDIR)/tests/ansible.cfg" in (ROOT / "Makefile").read_text()
    for script in ("tests/molecule.sh", "tests/demo.sh"):
        assert "export ANSIBLE_CONFIG=$PWD/tests/ansible.cfg" in (ROOT / script).read_text(), script
