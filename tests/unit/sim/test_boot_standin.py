"""The simulated boot (tests/sim/boot_standin.py): what a device's own extlinux.conf boots, accounted into MemTotal by
the emulated lane's formulas; a change that is not in effect at boot gains nothing; the OCI hook's cgroup and live
device tree. Root filesystems are built from the simulated variants' real files (DTS -> dtc, the collection's
overlay for the warehouse robot's recipes)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible_collections.edgeslim.jetson.plugins.module_utils import dt_overlay as ov

SIM = Path(__file__).resolve().parents[2] / "sim"
sys.path.insert(0, str(SIM))
import boot_standin as bs
import build_image
import demo_check
import dtb2fs

pytestmark = pytest.mark.skipif(not (shutil.which("dtc") and shutil.which("fdtoverlay")), reason="needs dtc")

MIB = 1048576
CONFIGURED = 7620 * MIB  # the Orin Nano 8GB's stock MemTotal (variant.yml ram_mb)
SWIOTLB_4MIB_GAIN_KB = 62160  # (32768 - 2048) x 2072 B, emulated-boot.md
FRAMEBUFFER_GAIN_KB = 32704  # 32 MiB no-map: S - S/512
CAMERA_GAIN_KB = 16352  # 16 MiB no-map
APPEND = "${cbootargs} root=/dev/mmcblk0p1 rw rootwait console=ttyTCU0,115200"
OVERLAY = "/boot/edgeslim/carveouts.dtbo"


def variant(name: str) -> dict:
    return yaml.safe_load((SIM / "variants" / name / "variant.yml").read_text())


@pytest.fixture(scope="module")
def firmware(tmp_path_factory) -> dict[str, Path]:
    """Per variant: its DTB and the stock tree in the kernel's layout (what fleet.py mounts and annotates)."""
    out = {}
    for name in ("orin-nano-8gb", "orin-nano-8gb-r35"):
        base = tmp_path_factory.mktemp(name)
        build_image.compile_dts(SIM / "variants" / name / "board.dts", base / "board.dtb")
        dtb2fs.unpack((base / "board.dtb").read_bytes(), base / "dt")
        out[name] = base
    return out


def rootfs(tmp: Path, fw: Path, name: str, entry: str, default: str = "edgeslim", overlay: bool = True) -> Path:
    """A device's root filesystem: release file, stock DTB, our compiled overlay and merged DTB, extlinux.conf with
    the stock entry plus ``entry`` (the body of LABEL edgeslim)."""
    v = variant(name)
    root = tmp / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc/nv_tegra_release").write_text(v["nv_tegra_release"])
    (root / "boot/dtb").mkdir(parents=True)
    shutil.copy(fw / "board.dtb", root / f"boot/dtb/kernel_{v['dtb']}")
    (root / "boot/edgeslim").mkdir()
    plan = ov.plan(str(fw / "dt"), ["headless", "no_camera"])
    (tmp / "o.dts").write_text(ov.render_dts(plan))
    subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", str(tmp / "o.dtbo"), str(tmp / "o.dts")], check=True)
    if overlay:
        shutil.copy(tmp / "o.dtbo", root / OVERLAY.lstrip("/"))
    subprocess.run(["fdtoverlay", "-i", str(fw / "board.dtb"), "-o", str(root / "boot/edgeslim/carveouts.dtb"),
                    str(tmp / "o.dtbo")], check=True)  # fmt: skip
    (root / "boot/extlinux").mkdir()
    (root / "boot/extlinux/extlinux.conf").write_text(
        f"TIMEOUT 30\nDEFAULT {default}\n\nMENU TITLE L4T boot options\n\n"
        f"LABEL edgeslim\n      MENU LABEL edgeslim: slimmed boot entry\n      LINUX /boot/Image\n{entry}\n"
        f"LABEL primary\n      MENU LABEL primary kernel\n      LINUX /boot/Image\n"
        f"      FDT /boot/dtb/kernel_{v['dtb']}\n      INITRD /boot/initrd\n      APPEND {APPEND}\n"
    )
    return root


def nano_entry(swiotlb: str | None = "2048", fdt: str = "/boot/dtb/kernel_{dtb}", overlays: str | None = OVERLAY
               ) -> str:  # fmt: skip
    dtb = variant("orin-nano-8gb")["dtb"]
    lines = [f"      FDT {fdt.format(dtb=dtb)}", f"      APPEND {APPEND}" + (f" swiotlb={swiotlb}" if swiotlb else "")]
    return "\n".join(lines + ([f"      OVERLAYS {overlays}"] if overlays else [])) + "\n"


def simulate(tmp: Path, fw: Path, root: Path) -> tuple[dict, Path]:
    work = tmp / "work"
    work.mkdir()
    return bs.simulate(root, fw / "dt", CONFIGURED, work)


def test_stock_boot_shows_the_configured_memtotal(firmware, tmp_path):
    fw = firmware["orin-nano-8gb"]
    root = rootfs(tmp_path, fw, "orin-nano-8gb", nano_entry(), default="primary")
    record, tree = simulate(tmp_path, fw, root)
    assert record["booted"]["label"] == "primary"
    assert record["booted"]["slots"] == 32768
    assert record["memtotal_kb"] == CONFIGURED // 1024
    assert (record["swiotlb_gain_kb"], record["carveouts_gain_kb"]) == (0, 0)
    assert (tree / "reserved-memory/display-framebuffer@c8000000").is_dir()


def test_warehouse_robot_entry_gains_the_pool_and_the_framebuffer(firmware, tmp_path):
    """slim's managed entry on R36: swiotlb=2048 and the headless + no_camera overlay on the stock FDT."""
    fw = firmware["orin-nano-8gb"]
    record, tree = simulate(tmp_path, fw, rootfs(tmp_path, fw, "orin-nano-8gb", nano_entry()))
    booted = record["booted"]
    assert (booted["label"], booted["requested_slots"], booted["slots"]) == ("edgeslim", 2048, 2048)
    assert booted["overlays_applied"] == [OVERLAY] and booted["notes"] == []
    assert record["swiotlb_gain_kb"] == SWIOTLB_4MIB_GAIN_KB
    # The display is disabled, so the firmware hands over no early-boot framebuffer; the camera carve-out is MB1's.
    assert booted["framebuffer_dropped"] == ["display-framebuffer@c8000000"]
    assert record["carveouts_gain_kb"] == FRAMEBUFFER_GAIN_KB
    assert "camera-rtcpu-carveout@ca000000" in booted["carveouts"]
    assert record["memtotal_kb"] == CONFIGURED // 1024 + SWIOTLB_4MIB_GAIN_KB + FRAMEBUFFER_GAIN_KB
    # The booted tree is what the device's live tree shows: engines disabled, no framebuffer node, the command line.
    assert ov.disabled_report(str(tree), ov.plan(str(fw / "dt"), ["headless", "no_camera"]).paths)["enabled"] == []
    assert not (tree / "reserved-memory/display-framebuffer@c8000000").exists()
    assert (tree / "chosen/bootargs").read_bytes().endswith(b"swiotlb=2048\0")


def test_swiotlb_alone_and_a_larger_pool(firmware, tmp_path):
    fw = firmware["orin-nano-8gb"]
    record, _tree = simulate(tmp_path, fw, rootfs(tmp_path, fw, "orin-nano-8gb", nano_entry(overlays=None)))
    assert (record["swiotlb_gain_kb"], record["carveouts_gain_kb"]) == (SWIOTLB_4MIB_GAIN_KB, 0)
    other = tmp_path / "big"
    other.mkdir()
    record, _tree = simulate(other, fw, rootfs(other, fw, "orin-nano-8gb", nano_entry("65536", overlays=None)))
    assert record["memtotal_kb"] == CONFIGURED // 1024 - 66304  # emulated-boot.md: swiotlb=65536 -> -66304 kB


@pytest.mark.parametrize(
    ("case", "entry", "default", "overlay", "note"),
    [
        ("overlay file missing", nano_entry(swiotlb=None), "edgeslim", False, "not found: skipped"),
        ("FDT missing", nano_entry(swiotlb=None, fdt="/boot/dtb/nope.dtb"), "edgeslim", True, "OVERLAYS ignored"),
        ("swiotlb not a number", nano_entry(swiotlb="lots", overlays=None), "edgeslim", True, "not a slot count"),
    ],
)
def test_a_change_not_in_effect_at_boot_gains_nothing(firmware, tmp_path, case, entry, default, overlay, note):
    fw = firmware["orin-nano-8gb"]
    record, _tree = simulate(tmp_path, fw, rootfs(tmp_path, fw, "orin-nano-8gb", entry, default, overlay))
    assert record["memtotal_kb"] == CONFIGURED // 1024, case
    assert any(note in n for n in record["booted"]["notes"]), record["booted"]["notes"]


def test_first_entry_boots_when_default_names_none(firmware, tmp_path):
    """L4TLauncher boots the first entry when DEFAULT names none: here the managed one, in full."""
    fw = firmware["orin-nano-8gb"]
    record, _tree = simulate(tmp_path, fw, rootfs(tmp_path, fw, "orin-nano-8gb", nano_entry(), default="gone"))
    assert record["booted"]["label"] == "edgeslim"
    assert record["memtotal_kb"] == CONFIGURED // 1024 + SWIOTLB_4MIB_GAIN_KB + FRAMEBUFFER_GAIN_KB


def test_r35_ignores_overlays_but_boots_the_merged_dtb(firmware, tmp_path):
    fw = firmware["orin-nano-8gb-r35"]
    dtb = variant("orin-nano-8gb-r35")["dtb"]
    overlays = f"      APPEND {APPEND} swiotlb=2048\n      FDT /boot/dtb/kernel_{dtb}\n      OVERLAYS {OVERLAY}\n"
    record, _tree = simulate(tmp_path, fw, rootfs(tmp_path, fw, "orin-nano-8gb-r35", overlays))
    assert record["carveouts_gain_kb"] == 0
    assert any("OVERLAYS ignored: L4T 35.6.0" in n for n in record["booted"]["notes"])
    assert record["swiotlb_gain_kb"] == SWIOTLB_4MIB_GAIN_KB
    merged = tmp_path / "merged"
    merged.mkdir()
    entry = f"      APPEND {APPEND} swiotlb=2048\n      FDT /boot/edgeslim/carveouts.dtb\n"
    record, _tree = simulate(merged, fw, rootfs(merged, fw, "orin-nano-8gb-r35", entry))
    assert record["booted"]["fdt"] == "/boot/edgeslim/carveouts.dtb"
    assert record["carveouts_gain_kb"] == FRAMEBUFFER_GAIN_KB


def test_paths_outside_the_rootfs_are_not_followed(firmware, tmp_path):
    fw = firmware["orin-nano-8gb"]
    root = rootfs(tmp_path, fw, "orin-nano-8gb", nano_entry(swiotlb=None, fdt="/boot/dtb/escape.dtb"))
    (root / "boot/dtb/escape.dtb").symlink_to(fw / "board.dtb")  # absolute link to a host file
    record, _tree = simulate(tmp_path, fw, root)
    assert record["booted"]["fdt"] is None
    assert bs.inside(root, "/../../etc/passwd") is None


def test_no_extlinux_conf_is_a_stock_boot(firmware, tmp_path):
    fw = firmware["orin-nano-8gb"]
    root = tmp_path / "empty"
    root.mkdir()
    record, _tree = simulate(tmp_path, fw, root)
    assert record["memtotal_kb"] == CONFIGURED // 1024
    assert record["booted"]["notes"] and "stock boot" in record["booted"]["notes"][0]


# ---- the OCI hook ---------------------------------------------------------------------------------------------------
def bundle(tmp: Path, fw: Path, root: Path, live: Path | None, limit: int | None = CONFIGURED) -> dict:
    ann = {bs.ANN_BOOT: str(SIM / "boot_standin.py"), bs.ANN_FIRMWARE_DT: str(fw / "dt")}
    if live:
        ann[bs.ANN_LIVE_DT] = str(live)
    config = {"root": {"path": str(root)}, "hostname": "robot-01", "annotations": ann,
              "linux": {"resources": {"memory": {"limit": limit, "swap": 2 * limit} if limit else {}}}}  # fmt: skip
    (tmp / "bundle").mkdir()
    (tmp / "bundle/config.json").write_text(json.dumps(config))
    (tmp / "proc/4242").mkdir(parents=True)
    (tmp / "proc/4242/cgroup").write_text("9:pids:/x\n4:memory:/libpod_parent/libpod-abc\n1:name=systemd:/x\n")
    cg = tmp / "cgroup/memory/libpod_parent/libpod-abc"
    cg.mkdir(parents=True)
    (cg / "memory.limit_in_bytes").write_text(f"{CONFIGURED}\n")
    (cg / "memory.memsw.limit_in_bytes").write_text(f"{2 * CONFIGURED}\n")
    return {"id": "abc", "pid": 4242, "bundle": str(tmp / "bundle"), "annotations": ann}


def test_hook_sets_the_memory_limit_and_rewrites_the_live_tree(firmware, tmp_path):
    fw = firmware["orin-nano-8gb"]
    root = rootfs(tmp_path, fw, "orin-nano-8gb", nano_entry())
    live = tmp_path / "live"
    shutil.copytree(fw / "dt", live)
    state = bundle(tmp_path, fw, root, live)
    record = bs.hook(state, cgroup_root=tmp_path / "cgroup", proc=tmp_path / "proc", firmware_seconds=0)
    cg = tmp_path / "cgroup/memory/libpod_parent/libpod-abc"
    limit = int((cg / "memory.limit_in_bytes").read_text())
    assert limit == record["memtotal_kb"] * 1024
    assert limit == (CONFIGURED // 1024 + SWIOTLB_4MIB_GAIN_KB + FRAMEBUFFER_GAIN_KB) * 1024
    assert int((cg / "memory.memsw.limit_in_bytes").read_text()) - limit == CONFIGURED  # swap allowance kept
    assert not (live / "reserved-memory/display-framebuffer@c8000000").exists()
    assert (live / "reserved-memory/camera-rtcpu-carveout@ca000000").is_dir()
    assert record["hostname"] == "robot-01" and record["container"] == "abc"


def test_hook_lowers_the_limit_for_a_larger_pool(firmware, tmp_path):
    fw = firmware["orin-nano-8gb"]
    root = rootfs(tmp_path, fw, "orin-nano-8gb", nano_entry("65536", overlays=None))
    bs.hook(
        bundle(tmp_path, fw, root, None), cgroup_root=tmp_path / "cgroup", proc=tmp_path / "proc", firmware_seconds=0
    )
    cg = tmp_path / "cgroup/memory/libpod_parent/libpod-abc"
    assert int((cg / "memory.limit_in_bytes").read_text()) == CONFIGURED - 66304 * 1024


def test_hook_refuses_what_it_cannot_simulate(firmware, tmp_path):
    fw = firmware["orin-nano-8gb"]
    root = rootfs(tmp_path, fw, "orin-nano-8gb", nano_entry())
    state = bundle(tmp_path, fw, root, None, limit=None)
    with pytest.raises(bs.BootError, match="no --memory limit"):
        bs.hook(state, cgroup_root=tmp_path / "cgroup", proc=tmp_path / "proc", firmware_seconds=0)
    config = json.loads((tmp_path / "bundle/config.json").read_text())
    config["annotations"][bs.ANN_FIRMWARE_DT] = str(tmp_path)
    config["linux"]["resources"]["memory"] = {"limit": CONFIGURED}
    (tmp_path / "bundle/config.json").write_text(json.dumps(config))
    with pytest.raises(bs.BootError, match="not a device tree"):
        bs.hook(state, cgroup_root=tmp_path / "cgroup", proc=tmp_path / "proc", firmware_seconds=0)


def test_dispatcher_refuses_an_annotation_that_is_not_a_stand_in(tmp_path):
    state = {"id": "x", "pid": 1, "bundle": str(tmp_path), "annotations": {"io.edgeslim.sim.boot": "/bin/true"}}
    res = subprocess.run([sys.executable, str(SIM / "boot_hook.py")], input=json.dumps(state), text=True,
                         capture_output=True, check=False)  # fmt: skip
    assert res.returncode == 1 and "is not a boot_standin.py" in res.stderr


# ---- make demo's closing check --------------------------------------------------------------------------------------
def report(**layers: dict) -> dict:
    hosts = [{"host": h, "reclaimed_mb": mb, "layer_status": {k: "unverified_container" for k in mb}}
             for h, mb in layers.items()]  # fmt: skip
    return {"hosts": hosts, "totals": {"reclaimed_mb": {}, "reclaimed_mb_total": 0}}


def test_demo_check_needs_three_layers_on_every_robot():
    full = {"services": 861.0, "swiotlb": 60.7, "carveouts": 31.9}
    _lines, problems = demo_check.check(report(r1=full, r2=full), ["r1", "r2"])
    assert problems == []
    _lines, problems = demo_check.check(report(r1=full, r2=dict(full, carveouts=0.0)), ["r1", "r2"])
    assert problems == ["r2: layer carveouts reclaimed 0.0 MB (unverified_container)"]
    _lines, problems = demo_check.check(report(r1=dict(full, swiotlb=None), cam=full), ["r1", "r2"])
    assert problems == [
        "r1: layer swiotlb reclaimed None MB (unverified_container)",
        "r2: not in the report",
        "hosts outside the group in the report: cam",
    ]
    assert demo_check.check(report(), [])[1][0] == "no warehouse robot in the inventory"
