"""The pending record arm.yml writes, rendered by Ansible's own templar, and what the checker makes of it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

ROLE = Path(__file__).resolve().parents[3] / "roles/boot_commit"


def record(**variables) -> dict:
    # Files Ansible loads from a role are trusted templates (ansible-core 2.19 templates nothing else).
    defaults = {k: trust_as_template(v) if isinstance(v, str) else v
                for k, v in yaml.safe_load((ROLE / "defaults/main.yml").read_text()).items()}  # fmt: skip
    tasks = yaml.safe_load((ROLE / "tasks/arm.yml").read_text())
    content = next(t for t in tasks if t["name"] == "Record the pending change and its health checks")
    args = {"boot_commit_layer": "swiotlb", "boot_commit_extlinux_path": "/boot/extlinux/extlinux.conf",
            "boot_commit_previous_default": "primary", "boot_commit_checks": {"cmdline_contains": ["swiotlb=2048"]},
            **variables}  # fmt: skip
    templar = Templar(loader=DataLoader(), variables={**defaults, **args})
    return json.loads(templar.template(trust_as_template(content["ansible.builtin.copy"]["content"])))


@pytest.fixture
def checker():
    spec = importlib.util.spec_from_file_location("edgeslim_boot_commit", ROLE / "files/edgeslim-boot-commit.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_managed_label_of_the_calling_layer_is_recorded():
    assert record(swiotlb_managed_label="slim")["managed_label"] == "slim"
    assert record(carveouts_managed_label="edgeslim")["managed_label"] == "edgeslim"
    assert "managed_label" not in record()  # used on its own: the checker takes the DEFAULT it booted with


def test_a_revert_whose_previous_label_is_gone_skips_the_recorded_managed_entry(checker, tmp_path):
    """DEFAULT was moved by hand to another entry after arming: the managed entry is still not a revert target."""
    conf = tmp_path / "extlinux.conf"
    conf.write_text("DEFAULT backup\n\nLABEL slim\n  LINUX /boot/Image\n\nLABEL backup\n  LINUX /boot/Image\n")
    doc = record(swiotlb_managed_label="slim", boot_commit_previous_default="gone")
    doc["extlinux_path"] = str(conf)
    assert checker.revert_target(str(conf), doc) == "backup"
    del doc["managed_label"]
    assert checker.revert_target(str(conf), doc) == "slim"  # what recording the label prevents
    pending = tmp_path / "pending"
    pending.mkdir()
    (pending / "swiotlb.json").write_text(json.dumps(record(swiotlb_managed_label="slim")))
    assert checker.read_pending(str(pending / "swiotlb.json"))[1] is None
