"""edgeslim.jetson.extlinux through main(): managed entry, idempotence, rollback, check/diff, refusals."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from ansible_collections.edgeslim.jetson.plugins.modules import extlinux
from conftest import FIXTURES
from modhelper import run_module


@pytest.fixture
def rootfs(tmp_path) -> Path:
    for f in ("boot/Image", "boot/initrd", "boot/dtb/kernel_tegra234-p3768-0000+p3767-0005-nv.dtb",
              "boot/edgeslim/display-off.dtbo", "boot/tegra234-p3767-camera-p3768-imx219-dual.dtbo"):  # fmt: skip
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("x")
    (tmp_path / "boot/extlinux").mkdir()
    shutil.copy(FIXTURES / "extlinux" / "r36-stock.conf", tmp_path / "boot/extlinux/extlinux.conf")
    return tmp_path


def run(rootfs: Path, args: dict, check: bool = False) -> dict:
    path = str(rootfs / "boot/extlinux/extlinux.conf")
    return run_module(
        extlinux.main, {"path": path, "root": str(rootfs), "backup": False, **args}, check=check, diff=True
    )


def digest(rootfs: Path) -> str:
    return hashlib.sha256((rootfs / "boot/extlinux/extlinux.conf").read_bytes()).hexdigest()


SWIOTLB = {"managed_label": "edgeslim", "managed_menu_label": "edgeslim: slimmed", "kernel_args": {"swiotlb": 2048}}


def test_managed_entry_idempotent_and_rolled_back_exactly(rootfs):
    original = (rootfs / "boot/extlinux/extlinux.conf").read_bytes()
    res = run(rootfs, SWIOTLB)
    assert res["changed"] and res["previous_default"] == "primary"
    assert res["summary"]["boot_label"] == "edgeslim"
    assert res["append_after"].endswith("swiotlb=2048")
    assert [e["label"] for e in res["summary"]["entries"]] == ["edgeslim", "primary"]
    assert run(rootfs, SWIOTLB)["changed"] is False
    back = run(rootfs, {"state": "absent", "managed_label": "edgeslim", "default_label": "primary"})
    assert back["changed"] and (rootfs / "boot/extlinux/extlinux.conf").read_bytes() == original


def test_check_mode_and_diff(rootfs):
    before = digest(rootfs)
    res = run(rootfs, SWIOTLB, check=True)
    assert res["changed"] and digest(rootfs) == before
    assert "swiotlb=2048" in res["diff"]["after"] and "swiotlb=2048" not in res["diff"]["before"]


def test_fdt_and_overlays(rootfs):
    args = {**SWIOTLB, "overlays": ["/boot/edgeslim/display-off.dtbo"]}
    res = run(rootfs, args)
    assert res["summary"]["entries"][0]["overlays"] == ["/boot/edgeslim/display-off.dtbo"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({**SWIOTLB, "kernel_args": {"swiotlb": "2048#x"}}, "cuts a line at '#'"),
        ({**SWIOTLB, "overlays": ["/boot/missing.dtbo"]}, "do not exist: /boot/missing.dtbo"),
        ({**SWIOTLB, "fdt": "/boot/dtb/none.dtb"}, "do not exist: /boot/dtb/none.dtb"),
        ({**SWIOTLB, "fdt": "", "overlays": ["/boot/edgeslim/display-off.dtbo"]}, "OVERLAYS needs an FDT"),
        ({**SWIOTLB, "clone_from": "nope"}, "no entry labelled 'nope'"),
        ({"state": "absent", "managed_label": "edgeslim", "default_label": "nope"}, "not an entry"),
    ],
)
def test_refusals_leave_the_file_untouched(rootfs, args, message):
    before = digest(rootfs)
    res = run(rootfs, args)
    assert res["failed"] and message in res["msg"], res
    assert digest(rootfs) == before


def test_malformed_file_is_refused(rootfs):
    conf = rootfs / "boot/extlinux/extlinux.conf"
    conf.write_text(conf.read_text().replace("LINUX /boot/Image", "KERNEL /boot/Image"))
    before = digest(rootfs)
    res = run(rootfs, SWIOTLB)
    assert res["failed"] and "KERNEL is not supported" in res["msg"]
    assert digest(rootfs) == before


def test_journal_records_the_stock_default_and_rollback_uses_it(rootfs, tmp_path):
    journal = tmp_path / "journal.json"
    original = (rootfs / "boot/extlinux/extlinux.conf").read_bytes()
    run(rootfs, {**SWIOTLB, "journal_path": str(journal)})
    layer = json.loads(journal.read_text())["layers"]["swiotlb"]
    assert layer["previous_default"] == "primary" and layer["managed_label"] == "edgeslim"
    run(rootfs, {**SWIOTLB, "kernel_args": {"swiotlb": 4096}, "journal_path": str(journal)})
    assert json.loads(journal.read_text())["layers"]["swiotlb"] == layer  # the stock state is kept
    back = run(rootfs, {"state": "absent", "managed_label": "edgeslim", "journal_path": str(journal)})
    assert back["changed"] and (rootfs / "boot/extlinux/extlinux.conf").read_bytes() == original
    assert "swiotlb" not in json.loads(journal.read_text())["layers"]
    assert (
        run(rootfs, {"state": "absent", "managed_label": "edgeslim", "journal_path": str(journal)})["changed"] is False
    )


DTB = "/boot/dtb/kernel_tegra234-p3768-0000+p3767-0005-nv.dtb"
CARVEOUTS = {"managed_label": "edgeslim", "managed_menu_label": "edgeslim: slimmed", "fdt": DTB,
             "overlays": ["/boot/edgeslim/display-off.dtbo"]}  # fmt: skip


@pytest.mark.parametrize("first", ["swiotlb", "carveouts"])
def test_two_layers_share_one_managed_entry(rootfs, tmp_path, first):
    """SWIOTLB and carveouts use ONE managed entry: both journal the stock DEFAULT, and removing one layer puts back
    only its own values while the other keeps booting through the entry."""
    journal = tmp_path / "journal.json"
    conf = rootfs / "boot/extlinux/extlinux.conf"
    original = conf.read_bytes()
    layers = {"swiotlb": SWIOTLB, "carveouts": CARVEOUTS}
    second = "carveouts" if first == "swiotlb" else "swiotlb"
    for layer in (first, second):
        res = run(rootfs, {**layers[layer], "journal_path": str(journal), "journal_layer": layer})
        assert res["changed"] and res["stock_default"] == "primary"
    doc = json.loads(journal.read_text())["layers"]
    assert {doc[n]["previous_default"] for n in doc} == {"primary"}
    entry = res["summary"]["entries"][0]
    assert entry["label"] == "edgeslim" and res["summary"]["labels"] == ["edgeslim", "primary"]
    assert entry["overlays"] == ["/boot/edgeslim/display-off.dtbo"] and "swiotlb=2048" in entry["append"]
    assert doc["carveouts"]["owned"] == {"fdt": DTB, "overlays": None}  # stock FDT cloned; no OVERLAYS before
    assert doc["swiotlb"]["owned"] == {"kernel_args": {"swiotlb": False}}
    # Re-runs change nothing, journal included.
    for layer in (first, second):
        assert run(rootfs, {**layers[layer], "journal_path": str(journal), "journal_layer": layer})["changed"] is False
    assert json.loads(journal.read_text())["layers"] == doc
    # Remove the carveouts layer: the entry stays (swiotlb uses it) without OVERLAYS; DEFAULT stays on it.
    back = run(rootfs, {"state": "absent", "managed_label": "edgeslim", "journal_path": str(journal),
                        "journal_layer": "carveouts"})  # fmt: skip
    assert back["changed"] and back["shared_with"] == ["swiotlb"]
    entry = back["summary"]["entries"][0]
    assert entry["label"] == "edgeslim" and entry["overlays"] == [] and entry["fdt"] == DTB
    assert "swiotlb=2048" in entry["append"] and back["summary"]["default_label"] == "edgeslim"
    assert "carveouts" not in json.loads(journal.read_text())["layers"]
    # Then the swiotlb layer: nobody else uses the entry, so it goes and the stock file comes back byte-identical.
    back = run(rootfs, {"state": "absent", "managed_label": "edgeslim", "journal_path": str(journal),
                        "journal_layer": "swiotlb"})  # fmt: skip
    assert back["changed"] and "shared_with" not in back
    assert conf.read_bytes() == original


def test_shared_entry_has_one_menu_label_whichever_layer_wrote_last(rootfs, tmp_path):
    """Without managed_menu_label every caller gives the entry the same identity, so re-runs of both write nothing."""
    journal = tmp_path / "journal.json"
    layers = {name: {k: v for k, v in args.items() if k != "managed_menu_label"}
              for name, args in (("swiotlb", SWIOTLB), ("carveouts", CARVEOUTS))}  # fmt: skip
    for _pass in range(2):
        for name, args in layers.items():
            res = run(rootfs, {**args, "journal_path": str(journal), "journal_layer": name})
    assert res["changed"] is False
    assert res["summary"]["boot_entry"]["menu_label"] == extlinux.MANAGED_MENU_LABEL == "edgeslim: slimmed boot entry"


def test_shared_entry_rollback_of_swiotlb_keeps_the_overlay(rootfs, tmp_path):
    journal = tmp_path / "journal.json"
    run(rootfs, {**SWIOTLB, "journal_path": str(journal), "journal_layer": "swiotlb"})
    run(rootfs, {**CARVEOUTS, "journal_path": str(journal), "journal_layer": "carveouts"})
    back = run(rootfs, {"state": "absent", "managed_label": "edgeslim", "journal_path": str(journal),
                        "journal_layer": "swiotlb"})  # fmt: skip
    entry = back["summary"]["entries"][0]
    assert entry["label"] == "edgeslim" and "swiotlb" not in entry["append"]
    assert entry["overlays"] == ["/boot/edgeslim/display-off.dtbo"]


def test_check_mode_may_assume_a_file_an_earlier_task_installs(rootfs):
    args = {**CARVEOUTS, "overlays": ["/boot/edgeslim/carveouts.dtbo"],
            "check_mode_assume_files": ["/boot/edgeslim/carveouts.dtbo"]}  # fmt: skip
    before = digest(rootfs)
    assert run(rootfs, args, check=True)["changed"] is True and digest(rootfs) == before
    res = run(rootfs, args)  # outside check mode the file must really exist
    assert res["failed"] and "do not exist: /boot/edgeslim/carveouts.dtbo" in res["msg"]


CAMERA = "/boot/tegra234-p3767-camera-p3768-imx219-dual.dtbo"
OURS = "/boot/edgeslim/display-off.dtbo"
KEEP = {**CARVEOUTS, "overlays": [OURS], "overlays_keep_existing": True}


@pytest.fixture
def jetson_io(rootfs) -> Path:
    shutil.copy(FIXTURES / "extlinux" / "r36-jetson-io-camera.conf", rootfs / "boot/extlinux/extlinux.conf")
    return rootfs


def test_managed_entry_cloned_from_jetson_io_keeps_the_camera_overlay(jetson_io, tmp_path):
    journal = tmp_path / "journal.json"
    conf = jetson_io / "boot/extlinux/extlinux.conf"
    original = conf.read_bytes()
    args = {**KEEP, "journal_path": str(journal), "journal_layer": "carveouts"}
    res = run(jetson_io, args)
    assert res["changed"] and res["stock_default"] == "JetsonIO" and res["overlays_existing"] == [CAMERA]
    assert res["summary"]["boot_label"] == "edgeslim" and res["summary"]["labels"] == ["primary", "edgeslim",
                                                                                       "JetsonIO"]  # fmt: skip
    assert res["summary"]["boot_entry"]["overlays"] == [CAMERA, OURS]
    assert f"\tOVERLAYS {CAMERA},{OURS}\n" in conf.read_text()
    assert res["summary"]["entries"][2]["overlays"] == [CAMERA]  # jetson-io's entry stays as the fallback
    again = run(jetson_io, args)
    assert again["changed"] is False and again["overlays_existing"] == [CAMERA, OURS]
    back = run(jetson_io, {"state": "absent", "managed_label": "edgeslim", "journal_path": str(journal),
                           "journal_layer": "carveouts"})  # fmt: skip
    assert back["changed"] and back["summary"]["default_label"] == "JetsonIO"
    assert conf.read_bytes() == original


def test_without_keep_the_overlays_are_replaced(jetson_io):
    res = run(jetson_io, {**CARVEOUTS, "overlays": [OURS]})
    assert res["summary"]["boot_entry"]["overlays"] == [OURS]


def test_a_removed_overlays_line_comes_back_from_the_journal(jetson_io, tmp_path):
    """A merged-DTB run removes OVERLAYS from the managed entry; a later OVERLAYS run must still keep the camera."""
    journal = tmp_path / "journal.json"
    conf = jetson_io / "boot/extlinux/extlinux.conf"
    original = conf.read_bytes()
    layer = {"journal_path": str(journal), "journal_layer": "carveouts"}
    merged = run(jetson_io, {**CARVEOUTS, "overlays": [], **layer})
    assert merged["overlays_existing"] == [CAMERA] and merged["summary"]["boot_entry"]["overlays"] == []
    assert json.loads(journal.read_text())["layers"]["carveouts"]["owned"]["overlays"] == CAMERA
    res = run(jetson_io, {**KEEP, **layer})
    assert res["overlays_existing"] == [CAMERA] and res["summary"]["boot_entry"]["overlays"] == [CAMERA, OURS]
    run(jetson_io, {"state": "absent", "managed_label": "edgeslim", **layer})
    assert conf.read_bytes() == original


def test_shared_entry_rollback_restores_the_exact_overlays_line(jetson_io, tmp_path):
    journal = tmp_path / "journal.json"
    conf = jetson_io / "boot/extlinux/extlinux.conf"
    run(jetson_io, {**SWIOTLB, "journal_path": str(journal), "journal_layer": "swiotlb"})
    with_swiotlb = conf.read_text()
    assert f"OVERLAYS {CAMERA}\n" in with_swiotlb.split("LABEL edgeslim", 1)[1]
    run(jetson_io, {**KEEP, "journal_path": str(journal), "journal_layer": "carveouts"})
    back = run(jetson_io, {"state": "absent", "managed_label": "edgeslim", "journal_path": str(journal),
                           "journal_layer": "carveouts"})  # fmt: skip
    assert back["shared_with"] == ["swiotlb"] and conf.read_text() == with_swiotlb
