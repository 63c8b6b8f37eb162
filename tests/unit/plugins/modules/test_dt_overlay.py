"""Device side of the carveouts layer on live trees in the kernel's fs layout (Orin Nano, AGX Orin, Thor).

The trees are the simulated variants' board.dts compiled with dtc and unpacked by tests/sim/dtb2fs.py into exactly
what /sys/firmware/devicetree/base shows (one directory per node, raw big-endian property files).
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_collections.edgeslim.jetson.plugins.module_utils import dt_overlay as ov
from ansible_collections.edgeslim.jetson.plugins.modules import dt_overlay
from modhelper import run_module

SIM = Path(__file__).resolve().parents[3] / "sim"
sys.path.insert(0, str(SIM))
import build_image
import dtb2fs

DTC = shutil.which("dtc")
needs_dtc = pytest.mark.skipif(DTC is None, reason="dtc not installed")

EXPECTED = {
    "orin-nano-8gb": (
        "t234",
        "p3767-0005",
        {
            "headless": ["/bus@0/dce@d800000", "/bus@0/display@13800000"],
            "no_camera": [
                "/bus@0/host1x@13e00000/isp@14800000",
                "/bus@0/host1x@13e00000/nvcsi@15a00000",
                "/bus@0/host1x@13e00000/vi@15c00000",
            ],
        },
    ),
    "agx-orin-64gb": ("t234", "p3701-0005", None),
    "agx-thor": (
        "t264",
        "p3834-0008",
        {
            "headless": ["/bus@0/dce@8808000000", "/bus@0/display@8800000000"],
            "no_camera": [
                "/bus@0/host1x@8180000000/isp@8180800000",
                "/bus@0/host1x@8180000000/nvcsi@8188000000",
                "/bus@0/host1x@8180000000/vi@8184000000",
            ],
        },
    ),
}
EXPECTED["agx-orin-64gb"] = ("t234", "p3701-0005", EXPECTED["orin-nano-8gb"][2])


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for variant in EXPECTED:
        base = tmp_path_factory.mktemp(variant)
        dtb = base / "board.dtb"
        build_image.compile_dts(SIM / "variants" / variant / "board.dts", dtb)
        dtb2fs.unpack(dtb.read_bytes(), base / "dt")
        out[variant] = base / "dt"
    return out


@pytest.fixture
def nano(trees, tmp_path) -> Path:
    """A writable copy (tests that edit the tree)."""
    dst = tmp_path / "dt"
    shutil.copytree(trees["orin-nano-8gb"], dst)
    return dst


def compile_dts(dts: str, tmp: Path) -> bytes:
    src, out = tmp / "o.dts", tmp / "o.dtbo"
    src.write_text(dts)
    subprocess.run([DTC, "-q", "-I", "dts", "-O", "dtb", "-o", str(out), str(src)], check=True)
    return out.read_bytes()


@pytest.mark.parametrize("variant", list(EXPECTED))
@pytest.mark.parametrize("recipes", [["headless"], ["no_camera"], ["headless", "no_camera"]])
def test_plan_finds_nodes_by_compatible(trees, variant, recipes):
    chip, module, nodes = EXPECTED[variant]
    plan = ov.plan(str(trees[variant]), recipes)
    assert (plan.chip, plan.module, plan.recipes) == (chip, module, recipes)
    assert plan.paths == sorted(p for r in recipes for p in nodes[r])
    assert all(t.status == "okay" for t in plan.targets) and plan.pending == plan.paths
    assert {t.recipe for t in plan.targets} == set(recipes)


@needs_dtc
@pytest.mark.parametrize("variant", list(EXPECTED))
def test_generated_overlay_compiles_and_applies_to_the_board_dtb(trees, variant, tmp_path):
    plan = ov.plan(str(trees[variant]), ["headless", "no_camera"])
    dts = ov.render_dts(plan)
    assert ov.render_dts(ov.plan(str(trees[variant]), ["headless", "no_camera"])) == dts  # deterministic
    blob = compile_dts(dts, tmp_path)
    ov.verify_overlay(blob, plan)
    assert ov.overlay_targets(blob) == {p: {"status": "disabled"} for p in plan.paths}
    # Apply it as the bootloader would (libfdt fdt_overlay_apply via fdtoverlay) and read the result back.
    fdtoverlay = shutil.which("fdtoverlay")
    if fdtoverlay is None:
        pytest.skip("fdtoverlay not installed")
    base = tmp_path / "base.dtb"
    build_image.compile_dts(SIM / "variants" / variant / "board.dts", base)
    (tmp_path / "o.dtbo").write_bytes(blob)
    merged = tmp_path / "merged.dtb"
    subprocess.run([fdtoverlay, "-i", str(base), "-o", str(merged), str(tmp_path / "o.dtbo")], check=True)
    dtb2fs.unpack(merged.read_bytes(), tmp_path / "after")
    report = ov.disabled_report(str(tmp_path / "after"), plan.paths)
    assert report == {"disabled": plan.paths, "enabled": [], "missing": []}
    # Nothing else changed status: the reserved-memory and host1x nodes keep "okay".
    assert ov.node_status(str(tmp_path / "after"), "/reserved-memory/linux,cma") == "okay"
    after = ov.plan(str(tmp_path / "after"), ["headless", "no_camera"])
    assert after.pending == [] and ov.render_dts(after) == dts  # idempotent on the booted tree


def test_refusals(nano, tmp_path):
    with pytest.raises(ov.OverlayError, match="not validated"):
        ov.plan(str(nano), ["no_gpu"])
    with pytest.raises(ov.OverlayError, match="no recipe requested"):
        ov.plan(str(nano), [])
    with pytest.raises(ov.OverlayError, match="no device tree"):
        ov.plan(str(tmp_path / "nope"), ["headless"])
    (nano / "compatible").write_bytes(b"raspberrypi,4-model-b\0brcm,bcm2711\0")
    with pytest.raises(ov.OverlayError, match="unknown chip"):
        ov.plan(str(nano), ["headless"])
    (nano / "compatible").write_bytes(b"nvidia,p3509-0000+p3767-0009\0nvidia,tegra234\0")
    with pytest.raises(ov.OverlayError, match="no validated carveout recipe"):
        ov.plan(str(nano), ["headless"])


def test_recipe_matching_nothing_is_refused(nano):
    for node in ("bus@0/display@13800000", "bus@0/dce@d800000"):
        shutil.rmtree(nano / node)
    with pytest.raises(ov.OverlayError, match="recipe 'headless': no node with compatible"):
        ov.plan(str(nano), ["headless"])
    assert ov.plan(str(nano), ["no_camera"]).paths  # the other recipe still plans


def test_status_absent_means_okay_and_disabled_is_seen(nano):
    os.unlink(nano / "bus@0/display@13800000/status")
    (nano / "bus@0/dce@d800000/status").write_bytes(b"disabled\0")
    plan = ov.plan(str(nano), ["headless"])
    assert {t.path: t.status for t in plan.targets} == {
        "/bus@0/dce@d800000": "disabled",
        "/bus@0/display@13800000": "okay",
    }
    assert plan.pending == ["/bus@0/display@13800000"]
    report = ov.disabled_report(str(nano), [*plan.paths, "/bus@0/gone@0"])
    assert report == {"disabled": ["/bus@0/dce@d800000"], "enabled": ["/bus@0/display@13800000"],
                      "missing": ["/bus@0/gone@0"]}  # fmt: skip


@needs_dtc
def test_verify_rejects_a_foreign_or_widened_overlay(trees, tmp_path):
    plan = ov.plan(str(trees["orin-nano-8gb"]), ["headless"])
    other = ov.plan(str(trees["orin-nano-8gb"]), ["no_camera"])
    with pytest.raises(ov.OverlayError, match="unexpected targets"):
        ov.verify_overlay(compile_dts(ov.render_dts(other), tmp_path), plan)
    widened = ov.render_dts(plan).replace('status = "disabled";', 'status = "disabled";\n\t\t\tfoo = "bar";')
    with pytest.raises(ov.OverlayError, match="more than status"):
        ov.verify_overlay(compile_dts(widened, tmp_path), plan)
    with pytest.raises(ov.OverlayError, match="bad magic"):
        ov.verify_overlay(b"\0" * 64, plan)
    good = compile_dts(ov.render_dts(plan), tmp_path)
    with pytest.raises(ov.OverlayError, match="truncated"):
        ov.verify_overlay(good[:-8], plan)


# ---- the module -------------------------------------------------------------------------------------------------
BOOT_ROOT: list[str] = []


@pytest.fixture(autouse=True)
def boot_root(tmp_path):
    """Each test's files live under its tmp_path, which stands for /boot."""
    BOOT_ROOT[:] = [str(tmp_path)]
    yield tmp_path
    BOOT_ROOT.clear()


def run(args: dict, check: bool = False) -> dict:
    return run_module(dt_overlay.main, {"boot_root": BOOT_ROOT[0], **args}, check=check, diff=True)


@needs_dtc
def test_module_installs_atomically_idempotent_check_and_absent(trees, tmp_path):
    dest = tmp_path / "boot/edgeslim/carveouts.dtbo"
    args = {"path": str(trees["orin-nano-8gb"]), "recipes": ["headless"], "dest": str(dest), "dtc": [DTC]}
    res = run(args, check=True)
    assert res["changed"] and not dest.exists() and "target-path" in res["diff"]["after"]
    res = run(args)
    assert res["changed"] and res["chip"] == "t234" and res["pending"] == res["paths"]
    assert dest.read_bytes()[:4] == b"\xd0\x0d\xfe\xed"
    assert dest.with_suffix(".dts").read_text() == res["dts"]
    assert oct(dest.stat().st_mode & 0o777) == "0o644"
    assert run(args)["changed"] is False
    assert run(args, check=True)["changed"] is False
    # A different recipe set rewrites it.
    assert run({**args, "recipes": ["headless", "no_camera"]})["changed"] is True
    assert run({**args, "state": "absent"}, check=True)["changed"] is True and dest.exists()
    assert run({**args, "state": "absent"})["changed"] is True and not dest.exists()
    assert not dest.with_suffix(".dts").exists()
    assert run({**args, "state": "absent"})["changed"] is False


@needs_dtc
def test_module_with_an_overlay_compiled_on_the_controller(trees, tmp_path):
    dest = tmp_path / "carveouts.dtbo"
    base = {"path": str(trees["agx-thor"]), "recipes": ["no_camera"], "dest": str(dest)}
    planned = run({**base, "state": "planned"})
    assert planned["changed"] is False and not dest.exists() and planned["chip"] == "t264"
    blob = compile_dts(planned["dts"], tmp_path)
    args = {**base, "dtbo_b64": base64.b64encode(blob).decode(), "dtc": ["/nonexistent/dtc"]}
    assert run(args)["changed"] is True and dest.read_bytes() == blob
    assert run(args)["changed"] is False
    # A controller-side overlay for other nodes is refused; the installed one stays.
    wrong = compile_dts(run({**base, "recipes": ["headless"], "state": "planned"})["dts"], tmp_path)
    res = run({**args, "dtbo_b64": base64.b64encode(wrong).decode()})
    assert res["failed"] and "does not match the plan" in res["msg"] and dest.read_bytes() == blob
    res = run({**args, "dtbo_b64": "!!!"})
    assert res["failed"] and "not base64" in res["msg"]


def test_module_refusals_change_nothing(trees, tmp_path):
    dest = tmp_path / "carveouts.dtbo"
    base = {"path": str(trees["orin-nano-8gb"]), "dest": str(dest)}
    for args, msg in (
        ({"recipes": ["no_gpu"]}, "not validated"),
        ({"recipes": []}, "recipes is empty"),
        ({"recipes": ["headless"], "dest": "relative.dtbo"}, "absolute path"),
        ({"recipes": ["headless"], "dtc": ["/nonexistent/dtc"]}, "dtc failed"),
    ):
        res = run({**base, **args})
        assert res["failed"] and msg in res["msg"], res
    assert not dest.exists()


@pytest.mark.parametrize("state", ["present", "planned", "absent"])
def test_files_outside_the_boot_root_refused_before_any_change(trees, tmp_path, state):
    """dest, merged_dest, fdt and overlays resolve (.., symlinks) inside boot_root, else nothing is read, written,
    removed, or created (no directory either)."""
    boot, outside = tmp_path / "boot", tmp_path / "etc"
    boot.mkdir()
    outside.mkdir()
    victim = outside / "victim.dtbo"
    victim.write_bytes(b"keep")
    os.symlink("../etc", boot / "link")
    (boot / "kernel.dtb").write_bytes(b"x")
    base = {"path": str(trees["orin-nano-8gb"]), "recipes": ["headless"], "boot_root": str(boot), "state": state,
            "dest": str(boot / "edgeslim/carveouts.dtbo"), "dtc": ["/nonexistent/dtc"]}  # fmt: skip
    for args, msg in (
        ({"dest": str(boot / "../etc/new/carveouts.dtbo")}, f"resolves to {outside}/new/carveouts.dtbo, outside"),
        ({"dest": str(boot / "link/victim.dtbo")}, f"dest {boot}/link/victim.dtbo refused: it resolves to {victim}"),
        ({"dest": str(victim)}, "outside"),
        ({"fdt": str(boot / "kernel.dtb"), "merged_dest": str(boot / "link/merged.dtb")}, "merged_dest"),
    ):
        res = run({**base, **args})
        assert res["failed"] and msg in res["msg"], (args, res)
    if state != "absent":
        for args, msg in (
            ({"fdt": str(boot / "link/victim.dtb"), "merged_dest": str(boot / "m.dtb")}, "fdt "),
            ({"fdt": str(boot / "kernel.dtb"), "merged_dest": str(boot / "m.dtb"), "overlays": [str(victim)]},
             "overlay "),
        ):  # fmt: skip
            res = run({**base, **args})
            assert res["failed"] and msg in res["msg"] and "outside" in res["msg"], (args, res)
    assert victim.read_bytes() == b"keep" and sorted(os.listdir(outside)) == ["victim.dtbo"]
    assert sorted(os.listdir(boot)) == ["kernel.dtb", "link"]


# ---- merged DTB (FDT without OVERLAYS) ----------------------------------------------------------------------------
FDTOVERLAY = shutil.which("fdtoverlay")
needs_fdtoverlay = pytest.mark.skipif(DTC is None or FDTOVERLAY is None, reason="dtc/fdtoverlay not installed")


def board_dtb(variant: str, tmp: Path) -> Path:
    out = tmp / f"kernel_{variant}.dtb"
    build_image.compile_dts(SIM / "variants" / variant / "board.dts", out)
    return out


@needs_fdtoverlay
def test_module_merges_the_overlay_into_a_copy_of_the_board_dtb(trees, tmp_path):
    fdt = board_dtb("orin-nano-8gb", tmp_path)
    stock = fdt.read_bytes()
    dest, merged = tmp_path / "boot/edgeslim/carveouts.dtbo", tmp_path / "boot/edgeslim/carveouts.dtb"
    args = {"path": str(trees["orin-nano-8gb"]), "recipes": ["headless", "no_camera"], "dest": str(dest),
            "dtc": [DTC], "fdt": str(fdt), "merged_dest": str(merged)}  # fmt: skip
    res = run(args, check=True)
    assert res["changed"] and res["merged_changed"] and not merged.exists() and not dest.exists()
    res = run(args)
    assert res["changed"] and res["merged_changed"] and res["merged_dest"] == str(merged)
    assert fdt.read_bytes() == stock  # the stock DTB is never touched
    assert oct(merged.stat().st_mode & 0o777) == "0o644"
    # What the kernel would see booting it: exactly the planned nodes disabled, the rest as in the stock DTB.
    dtb2fs.unpack(merged.read_bytes(), tmp_path / "booted")
    assert ov.disabled_report(str(tmp_path / "booted"), res["paths"])["disabled"] == res["paths"]
    assert ov.node_status(str(tmp_path / "booted"), "/reserved-memory/linux,cma") == "okay"
    again = run(args)
    assert again["changed"] is False and again["merged_changed"] is False
    # One recipe fewer: the merged DTB is made again from the stock DTB (not from the previous merge).
    res = run({**args, "recipes": ["headless"]})
    assert res["merged_changed"]
    dtb2fs.unpack(merged.read_bytes(), tmp_path / "booted2")
    assert ov.node_status(str(tmp_path / "booted2"), "/bus@0/host1x@13e00000/vi@15c00000") == "okay"
    assert ov.node_status(str(tmp_path / "booted2"), "/bus@0/display@13800000") == "disabled"
    # absent removes it with the overlay (no fdt needed).
    res = run({"dest": str(dest), "merged_dest": str(merged), "state": "absent"})
    assert res["changed"] and not merged.exists() and not dest.exists()


@needs_fdtoverlay
def test_merged_dtb_made_on_the_controller_is_checked_against_the_stock_dtb(trees, tmp_path):
    fdt = board_dtb("orin-nano-8gb", tmp_path)
    stock = fdt.read_bytes()
    dest, merged = tmp_path / "carveouts.dtbo", tmp_path / "carveouts.dtb"
    base = {"path": str(trees["orin-nano-8gb"]), "recipes": ["headless"], "dest": str(dest), "fdt": str(fdt),
            "merged_dest": str(merged), "fdtoverlay": ["/nonexistent/fdtoverlay"]}  # fmt: skip
    planned = run({**base, "state": "planned"})
    blob = compile_dts(planned["dts"], tmp_path)
    (tmp_path / "o.dtbo").write_bytes(blob)

    def merge(dtb: Path, overlay: bytes, name: str) -> bytes:
        (tmp_path / f"{name}.dtbo").write_bytes(overlay)
        out = tmp_path / f"{name}.dtb"
        subprocess.run([FDTOVERLAY, "-i", str(dtb), "-o", str(out), str(tmp_path / f"{name}.dtbo")], check=True)
        return out.read_bytes()

    b64 = base64.b64encode
    good = merge(fdt, blob, "good")
    args = {**base, "dtbo_b64": b64(blob).decode(), "merged_b64": b64(good).decode()}
    assert run(args)["merged_changed"] is True and merged.read_bytes() == good
    # Refused, and the installed DTB stays: too many nodes disabled, another board, not base64, the stock itself.
    wider = merge(fdt, compile_dts(run({**base, "recipes": ["headless", "no_camera"], "state": "planned"})["dts"],
                                   tmp_path), "wider")  # fmt: skip
    thor = board_dtb("agx-thor", tmp_path)
    for bad, msg in (
        (wider, "changes more than the planned status"),
        (thor.read_bytes(), "another board"),
        (fdt.read_bytes(), "does not disable"),
    ):
        res = run({**args, "merged_b64": b64(bad).decode()})
        assert res["failed"] and msg in res["msg"], res
    assert merged.read_bytes() == good
    res = run({**args, "merged_b64": "!!!"})
    assert res["failed"] and "not base64" in res["msg"]
    # Without merged_b64, fdtoverlay runs on the device: a missing one is a clear error.
    res = run({**args, "merged_b64": None})
    assert res["failed"] and "fdtoverlay failed" in res["msg"]
    for extra, msg in (
        ({"fdt": None}, "merged_dest needs fdt"),
        ({"merged_dest": str(fdt)[:-4] + ".dtbx"}, "ending in .dtb"),
        ({"merged_dest": str(fdt)}, "is the base fdt itself"),
        ({"fdt": str(tmp_path / "nope.dtb")}, "no such file"),
    ):
        res = run({**args, **extra})
        assert res["failed"] and msg in res["msg"], (extra, res)
    assert fdt.read_bytes() == stock and merged.read_bytes() == good


# A camera overlay in jetson-io's style (target-path fragments): enables the VI node and adds a sensor node.
CAMERA_DTS = """/dts-v1/;
/plugin/;
/ {
    fragment@0 {
        target-path = "/bus@0/host1x@13e00000/vi@15c00000";
        __overlay__ { status = "okay"; edgeslim-test-camera = "imx219-dual"; };
    };
    fragment@1 {
        target-path = "/";
        __overlay__ { cam_i2cmux { compatible = "i2c-mux-gpio"; status = "okay"; }; };
    };
};
"""


def flat(blob: bytes) -> dict:
    return ov._flatten(ov.parse_fdt(blob))


@needs_fdtoverlay
def test_merged_dtb_keeps_the_entrys_camera_overlay_before_ours(trees, tmp_path):
    fdt = board_dtb("orin-nano-8gb", tmp_path)
    camera = tmp_path / "tegra234-p3767-camera-p3768-imx219-dual.dtbo"
    camera.write_bytes(compile_dts(CAMERA_DTS, tmp_path))
    dest, merged = tmp_path / "carveouts.dtbo", tmp_path / "carveouts.dtb"
    args = {"path": str(trees["orin-nano-8gb"]), "recipes": ["headless"], "dest": str(dest), "dtc": [DTC],
            "fdt": str(fdt), "merged_dest": str(merged), "overlays": [str(camera)]}  # fmt: skip
    res = run(args)
    assert res["changed"] and res["merged_changed"], res
    after = flat(merged.read_bytes())
    assert after["/bus@0/host1x@13e00000/vi@15c00000"]["edgeslim-test-camera"] == b"imx219-dual\0"
    assert after["/cam_i2cmux"]["compatible"] == b"i2c-mux-gpio\0"
    assert all(after[n]["status"] == b"disabled\0" for n in res["paths"])
    assert run(args)["changed"] is False
    # Without the camera overlay the merge would drop it: that is a different DTB.
    assert run({**args, "overlays": []})["merged_changed"] is True and "/cam_i2cmux" not in flat(merged.read_bytes())
    # Controller-made: merged_b64 needs the overlaid base to be checked against, and a foreign one is refused.
    run(args)
    good, b64 = merged.read_bytes(), base64.b64encode
    blob = dest.read_bytes()
    overlaid = tmp_path / "overlaid.dtb"
    subprocess.run([FDTOVERLAY, "-i", str(fdt), "-o", str(overlaid), str(camera)], check=True)
    ctl = {**args, "dtbo_b64": b64(blob).decode(), "merged_b64": b64(good).decode(), "fdtoverlay": ["/nonexistent"]}
    res = run(ctl)
    assert res["failed"] and "needs overlaid_b64" in res["msg"]
    res = run({**ctl, "overlaid_b64": b64(overlaid.read_bytes()).decode()})
    assert not res.get("failed") and res["merged_changed"] is False, res
    thor = board_dtb("agx-thor", tmp_path).read_bytes()
    res = run({**ctl, "overlaid_b64": b64(thor).decode()})
    assert res["failed"] and "another board" in res["msg"]
    # The stock DTB as the "overlaid" base: the merge carries more changes than ours, refused.
    res = run({**ctl, "overlaid_b64": b64(fdt.read_bytes()).decode()})
    assert res["failed"] and "differs from the base FDT in its nodes" in res["msg"], res
    for extra, msg in (
        ({"overlays": [str(tmp_path / "gone.dtbo")]}, "no such file"),
        ({"overlays": ["relative.dtbo"]}, "absolute paths ending in .dtbo"),
        ({"merged_dest": None, "fdt": None}, "only into a merged DTB"),
    ):
        res = run({**args, **extra})
        assert res["failed"] and msg in res["msg"], (extra, res)
    assert merged.read_bytes() == good
