"""jetson_info through main() on fixture trees: a simulated Orin Nano and Thor root, a non-Jetson, no DT."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from ansible_collections.edgeslim.jetson.plugins.module_utils import l4t
from ansible_collections.edgeslim.jetson.plugins.modules import jetson_info
from conftest import FIXTURES
from modhelper import run_module

SIM = Path(__file__).resolve().parents[3] / "sim"
sys.path.insert(0, str(SIM))
import build_image
import dtb2fs


def make_root(tmp_path: Path, variant: str, release: str, cmdline: str) -> tuple[Path, Path]:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "proc").mkdir()
    shutil.copy(FIXTURES / "l4t" / release, root / "etc" / "nv_tegra_release")
    (root / "proc" / "cmdline").write_text(cmdline + "\n")
    (root / "boot" / "extlinux").mkdir(parents=True)
    (root / "boot" / "extlinux" / "extlinux.conf").write_text(
        "TIMEOUT 30\nDEFAULT primary\nLABEL primary\n  LINUX /boot/Image\n  APPEND ${cbootargs} swiotlb=2048\n"
    )
    dtb = tmp_path / "board.dtb"
    build_image.compile_dts(SIM / "variants" / variant / "board.dts", dtb)
    dtb2fs.unpack(dtb.read_bytes(), tmp_path / "dt")
    return root, tmp_path / "dt"


def run(args: dict, dmesg: tuple = (0, (FIXTURES / "l4t" / "dmesg-stock.txt").read_text(), "")) -> dict:
    def run_command(argv):
        return dmesg if argv[0] == "dmesg" else (0, "36.4.7-20250918154033", "")

    return run_module(jetson_info.main, args, run_command=run_command)


def test_orin_nano(tmp_path):
    root, dtdir = make_root(tmp_path, "orin-nano-8gb", "r36.4.7.txt", "root=/dev/nvme0n1p1 console=ttyTCU0,115200")
    res = run({"root": str(root), "devicetree_path": str(dtdir), "efivars_path": str(tmp_path / "no-efi")})
    assert res["is_jetson"] is True and res["reason"] == ""
    assert (res["soc"], res["module"]["module"], res["module"]["carrier"]) == ("t234", "p3767-0005", "p3768-0000")
    assert res["l4t"]["version"] == "36.4.7" and res["l4t"]["jetpack"] == "6.2.1"
    assert res["l4t"]["core_package"] == "36.4.7-20250918154033"
    assert res["swiotlb"]["configured"] is None  # stock cmdline: kernel default
    assert res["swiotlb"]["next_boot"]["slots"] == 2048  # the boot entry carries swiotlb=2048
    assert (res["swiotlb"]["pool_mib"], res["swiotlb"]["source"]) == (64, "kernel log")
    names = {c["name"] for c in res["carveouts"]}
    assert "fsi-carveout@a6000000" in names and "linux,cma" in names
    assert res["boot"]["extlinux"]["default_label"] == "primary"


def test_thor(tmp_path):
    root, dtdir = make_root(tmp_path, "agx-thor", "r38.4.0.txt", "swiotlb=4096")
    res = run({"root": str(root), "devicetree_path": str(dtdir)}, dmesg=(1, "", "Operation not permitted"))
    assert res["is_jetson"] and res["soc"] == "t264" and res["module"]["module"] == "p3834-0008"
    assert res["l4t"]["jetpack"] == "7.1"
    assert res["swiotlb"]["configured"]["mib"] == 8.0 and res["swiotlb"]["pool_mib"] is None
    assert any("dmesg unavailable" in w for w in res["warnings_list"])


def test_not_a_jetson(tmp_path):
    dtdir = tmp_path / "dt"
    dtdir.mkdir()
    (dtdir / "compatible").write_bytes(b"raspberrypi,4-model-b\0brcm,bcm2711\0")
    res = run({"root": str(tmp_path), "devicetree_path": str(dtdir)})
    assert res["is_jetson"] is False and "names no NVIDIA Tegra SoC" in res["reason"]
    res = run({"root": str(tmp_path), "devicetree_path": str(tmp_path / "missing")})
    assert res["is_jetson"] is False and "no device tree" in res["reason"]
    assert "failed" not in res


def test_corrupt_device_tree_fails_cleanly(tmp_path):
    root, dtdir = make_root(tmp_path, "orin-nano-8gb", "r36.4.7.txt", "")
    (dtdir / "reserved-memory" / "#size-cells").write_bytes(b"\0\0")
    res = run({"root": str(root), "devicetree_path": str(dtdir), "efivars_path": str(tmp_path / "no-efi")})
    assert res["failed"] and "whole number of 32-bit cells" in res["msg"]


# efivarfs layout of SecureBoot-8be4df61-...: a little-endian u32 of attributes (BOOTSERVICE_ACCESS |
# RUNTIME_ACCESS = 0x6, no NON_VOLATILE: the firmware recomputes it each boot), then the 1-byte value.
SB_ON = b"\x06\x00\x00\x00\x01"
SB_OFF = b"\x06\x00\x00\x00\x00"


def secure_boot_of(tmp_path: Path, data: bytes | None) -> dict:
    root, dtdir = make_root(tmp_path, "orin-nano-8gb", "r36.4.7.txt", "")
    efivars = tmp_path / "efivars"
    efivars.mkdir()
    # a neighbour with another GUID must not be taken for it
    (efivars / "SecureBoot-00000000-0000-0000-0000-000000000000").write_bytes(SB_ON)
    if data is not None:
        (efivars / "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c").write_bytes(data)
    return run({"root": str(root), "devicetree_path": str(dtdir), "efivars_path": str(efivars)})


def test_secure_boot_on(tmp_path):
    res = secure_boot_of(tmp_path, SB_ON)
    assert res["secure_boot"] is True
    assert not any("SecureBoot" in w for w in res["warnings_list"])


def test_secure_boot_off(tmp_path):
    assert secure_boot_of(tmp_path, SB_OFF)["secure_boot"] is False


def test_secure_boot_variable_missing(tmp_path):
    res = secure_boot_of(tmp_path, None)
    assert res["secure_boot"] is None and "failed" not in res
    assert not any("SecureBoot" in w for w in res["warnings_list"])


def test_secure_boot_no_efivarfs(tmp_path):
    root, dtdir = make_root(tmp_path, "orin-nano-8gb", "r36.4.7.txt", "")
    res = run({"root": str(root), "devicetree_path": str(dtdir), "efivars_path": str(tmp_path / "no-efi")})
    assert res["secure_boot"] is None and "failed" not in res


def test_secure_boot_truncated_or_odd_is_unknown(tmp_path):
    res = secure_boot_of(tmp_path, SB_ON[:4])  # attributes only
    assert res["secure_boot"] is None
    assert any("4 bytes, expected 4 attribute bytes and a value byte" in w for w in res["warnings_list"])
    state, note = l4t.secure_boot_state(b"")
    assert state is None and "0 bytes" in note
    state, note = l4t.secure_boot_state(b"\x06\x00\x00\x00\x02")
    assert state is None and "neither 0 nor 1" in note


def test_pool_from_a_debugfs_directory(tmp_path):
    root, dtdir = make_root(tmp_path, "orin-nano-8gb", "r36.4.7.txt", "swiotlb=2048")
    pool = tmp_path / "debugfs-swiotlb"
    pool.mkdir()
    (pool / "io_tlb_nslabs").write_text("2048\n")
    (pool / "io_tlb_used").write_text("0\n")
    res = run({"root": str(root), "devicetree_path": str(dtdir), "swiotlb_debugfs_path": str(pool)})
    pool_read = res["swiotlb"]
    assert (pool_read["pool_slots"], pool_read["pool_mib"], pool_read["source"]) == (2048, 4.0, "debugfs")


def test_a_missing_nv_tegra_release_is_named(tmp_path):
    """A Jetson device tree without /etc/nv_tegra_release: the release is unknown and the module says why."""
    root, dtdir = make_root(tmp_path, "orin-nano-8gb", "r36.4.7.txt", "")
    (root / "etc" / "nv_tegra_release").unlink()
    res = run({"root": str(root), "devicetree_path": str(dtdir), "efivars_path": str(tmp_path / "no-efi")})
    assert res["is_jetson"] is True and "l4t" not in res and "failed" not in res
    missing = f"{root}/etc/nv_tegra_release is missing: the L4T release is unknown"
    assert any(w.startswith(missing) for w in res["warnings_list"]), res["warnings_list"]


def test_an_empty_nv_tegra_release_is_named(tmp_path):
    root, dtdir = make_root(tmp_path, "orin-nano-8gb", "r36.4.7.txt", "")
    (root / "etc" / "nv_tegra_release").write_text("")
    res = run({"root": str(root), "devicetree_path": str(dtdir), "efivars_path": str(tmp_path / "no-efi")})
    assert "l4t" not in res
    assert any("/etc/nv_tegra_release is empty" in w for w in res["warnings_list"]), res["warnings_list"]
