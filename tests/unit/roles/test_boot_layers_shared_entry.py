"""Both boot layers' extlinux tasks, with the arguments their roles pass, on a stock file: a re-run writes nothing.

The arguments come from roles/{swiotlb,carveouts}/tasks/main.yml themselves (rendered with the test's values), so a
role that gives the shared managed entry a layer-specific identity again fails here.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from ansible_collections.edgeslim.jetson.plugins.module_utils import extlinux_edit
from ansible_collections.edgeslim.jetson.plugins.modules import extlinux
from conftest import FIXTURES
from jinja2 import StrictUndefined
from jinja2.nativetypes import NativeEnvironment

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "modules"))
from modhelper import run_module

ROLES = Path(__file__).resolve().parents[3] / "roles"
DTB = "/boot/dtb/kernel_tegra234-p3768-0000+p3767-0005-nv.dtb"
OVERLAY = "/boot/edgeslim/carveouts.dtbo"
MERGED = "/boot/edgeslim/carveouts.dtb"


def role_args(layer: str, variables: dict) -> dict:
    """The arguments of the role's task that writes the managed entry, rendered like Ansible would."""
    tasks = yaml.safe_load((ROLES / layer / "tasks" / "main.yml").read_text())
    blocks = [t for t in tasks if "block" in t]
    writes = [t for b in blocks for t in b["block"] if "edgeslim.jetson.extlinux" in t]
    assert len(writes) == 1, f"{layer}: expected one extlinux task in its block"
    env = NativeEnvironment(undefined=StrictUndefined)

    def render(value):
        if isinstance(value, str):
            return env.from_string(value).render(variables)
        if isinstance(value, dict):
            return {k: render(v) for k, v in value.items()}
        if isinstance(value, list):
            return [render(v) for v in value]
        return value

    return render(writes[0]["edgeslim.jetson.extlinux"])


@pytest.fixture(params=["overlays", "merged"])
def layers(request, tmp_path) -> tuple[Path, dict]:
    root = tmp_path / "root"
    for f in ("boot/Image", "boot/initrd", DTB, OVERLAY, MERGED):
        (root / f.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / f.lstrip("/")).write_text("x")
    (root / "boot/extlinux").mkdir()
    conf = root / "boot/extlinux/extlinux.conf"
    shutil.copy(FIXTURES / "extlinux" / "r36-stock.conf", conf)
    journal = str(tmp_path / "journal.json")
    common = {"path": str(conf), "root": str(root)}
    swiotlb = role_args("swiotlb", {"swiotlb_extlinux_path": str(conf), "swiotlb_managed_label": "edgeslim",
                                    "__swiotlb_slots": 2048, "swiotlb_journal_path": journal})  # fmt: skip
    carveouts = role_args("carveouts", {"carveouts_extlinux_path": str(conf), "carveouts_managed_label": "edgeslim",
                                        "__carveouts_fdt": MERGED if request.param == "merged" else DTB,
                                        "__carveouts_fdt_method": request.param, "carveouts_overlay_path": OVERLAY,
                                        "carveouts_merged_fdt_path": MERGED,
                                        "carveouts_journal_path": journal})  # fmt: skip
    return conf, {"swiotlb": {**swiotlb, **common}, "carveouts": {**carveouts, **common}}


def backups(conf: Path) -> list[str]:
    return sorted(f for f in os.listdir(conf.parent) if f.startswith(conf.name + extlinux_edit.BACKUP_PREFIX))


def test_second_pass_of_both_layers_writes_nothing(layers):
    conf, args = layers
    for layer in ("swiotlb", "carveouts"):
        assert run_module(extlinux.main, args[layer])["changed"] is True
    state = (conf.read_bytes(), conf.stat().st_mtime_ns, backups(conf))
    journal = Path(args["swiotlb"]["journal_path"]).read_text()
    for layer in ("swiotlb", "carveouts"):
        res = run_module(extlinux.main, args[layer])
        assert res["changed"] is False, (layer, res.get("diff"))
        assert "backup_file" not in res
    assert (conf.read_bytes(), conf.stat().st_mtime_ns, backups(conf)) == state
    assert Path(args["swiotlb"]["journal_path"]).read_text() == journal
    entry = res["summary"]["boot_entry"]
    assert entry["label"] == "edgeslim" and "swiotlb=2048" in entry["append"]
    assert json.loads(journal)["layers"].keys() == {"swiotlb", "carveouts"}


def test_either_order_gives_the_same_file(layers, tmp_path):
    """The entry's identity does not say which layer wrote last."""
    conf, args = layers
    stock = conf.read_bytes()
    for layer in ("swiotlb", "carveouts"):
        run_module(extlinux.main, args[layer])
    swiotlb_first = conf.read_bytes()
    conf.write_bytes(stock)
    os.unlink(args["swiotlb"]["journal_path"])
    for layer in ("carveouts", "swiotlb"):
        run_module(extlinux.main, args[layer])
    assert conf.read_bytes() == swiotlb_first
