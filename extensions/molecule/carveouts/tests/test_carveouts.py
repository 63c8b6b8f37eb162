"""Carveouts device side on the simulated Orin Nano: what the committed boot left, then the device's own revert."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / ".collections"))
from ansible_collections.edgeslim.jetson.plugins.module_utils.dt_overlay import FdtNode, parse_fdt

NODES = ["/bus@0/dce@d800000", "/bus@0/display@13800000"]  # headless on T234, found by compatible
DTB = "/boot/dtb/kernel_tegra234-p3768-0000+p3767-0005-nv.dtb"
# The host is a jetson-io-configured device (prepare): DEFAULT JetsonIO = primary + this camera overlay.
CAMERA = "/boot/tegra234-p3767-camera-p3768-imx219-dual.dtbo"
OURS = "/boot/edgeslim/carveouts.dtbo"


def entry(text: str, label: str) -> str:
    return text.split(f"LABEL {label}\n", 1)[1].split("\nLABEL ", 1)[0]


def test_committed_boot_had_the_overlay_in_the_managed_entry(host):
    slim = host.file("/root/extlinux.conf.slim").content_string
    stock = host.file("/root/extlinux.conf.stock").content_string
    assert "DEFAULT edgeslim\n" in slim and "DEFAULT JetsonIO\n" in stock
    managed = entry(slim, "edgeslim")
    assert f"FDT {DTB}\n" in managed
    # Cloned from jetson-io's entry: the camera overlay still boots, ours is applied after it.
    assert f"OVERLAYS {CAMERA},{OURS}\n" in managed, managed
    # Both entries are kept byte-identical as the fallbacks.
    assert entry(stock, "primary") in slim and entry(stock, "JetsonIO") in slim


def test_overlay_file_was_a_dtb_disabling_exactly_the_recipe_nodes(host):
    dtbo = host.file("/root/carveouts.dtbo.slim")
    assert dtbo.content[:4] == b"\xd0\x0d\xfe\xed"  # FDT magic
    dts = host.file("/root/carveouts.dts.slim").content_string
    assert "/plugin/;" in dts
    assert sorted(line.split('"')[1] for line in dts.splitlines() if "target-path" in line) == NODES
    assert dts.count('status = "disabled";') == len(NODES)


def test_commit_was_honest_about_the_container(host):
    verdict = json.loads(host.file("/root/verdict-commit.json").content_string)
    assert verdict["status"] == "committed" and verdict["failures"] == []
    notes = verdict["notes"]
    for node in NODES:
        assert f"device-tree check for {node} not possible in a container (the live tree is not this boot's)" in notes
    assert host.file("/root/carveouts-status").content_string.strip() == "unverified_container"
    # The live tree here is the read-only bind mount: still "okay", and nobody claimed otherwise.
    assert host.file("/sys/firmware/devicetree/base/bus@0/display@13800000/status").content.rstrip(b"\0") == b"okay"


def flat(node: FdtNode, path: str = "") -> dict[str, dict[str, bytes]]:
    out = {path or "/": node.props}
    for name, child in node.children.items():
        out.update(flat(child, f"{path}/{name}"))
    return out


def test_merged_method_booted_a_copy_of_the_stock_dtb_with_only_the_recipe_nodes_disabled(host):
    merged_conf = host.file("/root/extlinux.conf.merged").content_string
    managed = entry(merged_conf, "edgeslim")
    assert "FDT /boot/edgeslim/carveouts.dtb\n" in managed and "OVERLAYS" not in managed, managed
    assert entry(host.file("/root/extlinux.conf.stock").content_string, "JetsonIO") in merged_conf
    stock, merged = (
        flat(parse_fdt(host.file(DTB).content)),
        flat(parse_fdt(host.file("/root/carveouts.dtb.merged").content)),
    )
    # The camera overlay the entry booted is in the merged DTB (its node added, its property set) ...
    assert set(merged) - set(stock) == {"/cam_i2cmux"}
    assert merged["/cam_i2cmux"]["compatible"] == b"i2c-mux-gpio\0"
    vi = "/bus@0/host1x@13e00000/vi@15c00000"
    assert merged[vi].pop("edgeslim-test-camera") == b"imx219-dual\0"
    # ... and otherwise the stock DTB with exactly the recipe nodes disabled.
    for path, props in merged.items():
        if path == "/cam_i2cmux":
            continue
        if path in NODES:
            assert props["status"] == b"disabled\0", path
            props = {k: v for k, v in props.items() if k != "status"}
            assert props == {k: v for k, v in stock[path].items() if k != "status"}, path
        else:
            assert props == stock[path], path
    verdict = json.loads(host.file("/root/verdict-merged.json").content_string)
    assert verdict["status"] == "committed", verdict
    assert host.file("/root/carveouts-status.merged").content_string.strip() == "unverified_container"


def test_switch_back_to_overlays_uses_the_stock_dtb_and_removes_the_merged_one(host):
    managed = entry(host.file("/root/extlinux.conf.switched").content_string, "edgeslim")
    # The merged run removed the OVERLAYS line; the camera overlay comes back from the journal, ahead of ours.
    assert f"FDT {DTB}\n" in managed and f"OVERLAYS {CAMERA},{OURS}\n" in managed, managed
    assert host.file("/root/merged-left.switched").content_string.strip() == "False"


def test_failing_health_check_reverted_and_failed_the_host(host):
    verdict = json.loads(host.file("/root/verdict-revert.json").content_string)
    assert verdict["status"] == "reverted" and verdict["reverted_to"] == "JetsonIO"
    assert any("health command failed" in f for f in verdict["failures"])
    outcome = host.file("/root/play-outcome").content_string
    assert outcome.startswith("failed:") and "did not commit" in outcome and "boot entry restored" in outcome


def test_rescue_restored_the_stock_state(host):
    assert host.file("/boot/extlinux/extlinux.conf").content == host.file("/root/extlinux.conf.stock").content
    assert not host.file("/boot/edgeslim/carveouts.dtbo").exists
    assert not host.file("/boot/edgeslim/carveouts.dts").exists
    assert not host.file("/boot/edgeslim/carveouts.dtb").exists
    assert not host.file("/var/lib/edgeslim/pending/carveouts.json").exists
    journal = json.loads(host.file("/var/lib/edgeslim/journal.json").content_string)
    assert "carveouts" not in journal["layers"]


def test_staged_layer_then_rollback_gave_the_jetson_io_file_back_byte_identical(host):
    managed = entry(host.file("/root/extlinux.conf.staged").content_string, "edgeslim")
    assert f"OVERLAYS {CAMERA},{OURS}\n" in managed, managed
    before = host.file("/root/extlinux.conf.sha256").content_string.strip()
    assert host.file("/root/extlinux.conf.sha256.rolled_back").content_string.strip() == before
    assert host.file("/boot/extlinux/extlinux.conf").sha256sum == before
    assert host.file(CAMERA).exists  # the user's overlay is never touched
