"""edgeslim.jetson.extlinux refuses bad input itself, whatever a role or profile passes (docs/reliability.md).

Every refusal leaves extlinux.conf byte-identical, with no temporary file or backup left in /boot/extlinux.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from ansible_collections.edgeslim.jetson.plugins.module_utils import extlinux as x
from ansible_collections.edgeslim.jetson.plugins.modules import extlinux
from conftest import FIXTURES
from modhelper import run_module

DTB = "/boot/dtb/kernel_tegra234-p3768-0000+p3767-0005-nv.dtb"
MANAGED = {"managed_label": "edgeslim", "managed_menu_label": "edgeslim: slimmed"}


def make_rootfs(tmp_path: Path, fixture: str = "r36-stock.conf") -> Path:
    root = tmp_path / "rootfs"
    for f in ("boot/Image", "boot/initrd", DTB[1:], "boot/edgeslim/carveouts.dtbo",
              "boot/dtb/kernel_tegra264-p4071-0000+p3834-0008-nv.dtb", "etc/evil.dtb"):  # fmt: skip
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_text("x")
    (root / "boot/extlinux").mkdir()
    shutil.copy(FIXTURES / "extlinux" / fixture, root / "boot/extlinux/extlinux.conf")
    return root


@pytest.fixture
def rootfs(tmp_path) -> Path:
    return make_rootfs(tmp_path)


def conf_path(root: Path) -> Path:
    return root / "boot/extlinux/extlinux.conf"


def run(root: Path, args: dict, check: bool = False) -> dict:
    return run_module(extlinux.main, {"path": str(conf_path(root)), "root": str(root), "backup": False, **args},
                      check=check, diff=True)  # fmt: skip


def listing(root: Path) -> list[str]:
    return sorted(os.listdir(root / "boot/extlinux"))


# ---- 1. kernel arguments --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kernel_args", "message"),
    [
        ({"swiotlb": "2048 init=/bin/sh"}, "contains ' ' (U+0020)"),
        ({"swiotlb": "2048\tinit=/bin/sh"}, "(U+0009)"),
        ({"swiotlb": "2048\x0binit=/bin/sh"}, "(U+000B)"),
        ({"swiotlb": "2048\x0cinit=/bin/sh"}, "(U+000C)"),
        ({"quiet_mode": "1\x00x"}, "(U+0000)"),
        ({"quiet_mode": "1\x1bx"}, "(U+001B)"),
        ({"quiet_mode": "1\u2028init=/bin/sh"}, "(U+2028)"),
        ({"quiet_mode": "1\u2029init=/bin/sh"}, "(U+2029)"),
        ({"quiet_mode": "1\u0085init=/bin/sh"}, "(U+0085)"),
        ({"console": 'tty0" init=/bin/sh "'}, "contains '\"' (U+0022)"),
        ({"console": 'a"b'}, "(U+0022)"),
        ({"init=/bin/sh swiotlb": "2048"}, "kernel argument name 'init=/bin/sh swiotlb' refused"),
        ({"a=b": "1"}, "kernel argument name 'a=b' refused"),
        ({"--": None}, "kernel argument name '--' refused"),
        ({"": "1"}, "kernel argument name '' refused"),
        ({"root": "/dev/sda1"}, "refusing to set root="),
        ({"init": "/bin/sh"}, "refusing to set init="),
        ({"rdinit": "/bin/sh"}, "refusing to set rdinit="),
        ({"nfsroot": "10.0.0.1:/export"}, "refusing to set nfsroot="),
        ({"swiotlb": "51200000000"}, "at most 524288 slots (1024 MiB)"),
        ({"swiotlb": "524289"}, "at most 524288 slots"),
        ({"swiotlb": "0"}, "decimal slot count > 0"),
        ({"swiotlb": "02048"}, "read as octal or hex"),
        ({"swiotlb": "0x800"}, "read as octal or hex"),
        ({"swiotlb": "2048,noforce"}, "never 0, noforce"),
        ({"swiotlb": None}, "a bare flag"),
    ],
)
def test_kernel_args_refused_before_any_change(rootfs, kernel_args, message):
    before = conf_path(rootfs).read_bytes()
    res = run(rootfs, {**MANAGED, "kernel_args": kernel_args})
    assert res["failed"] and message in res["msg"], res["msg"]
    assert conf_path(rootfs).read_bytes() == before and listing(rootfs) == ["extlinux.conf"]


def test_removing_root_is_refused_too(rootfs):
    res = run(rootfs, {**MANAGED, "kernel_args_absent": ["root"]})
    assert res["failed"] and "refusing to remove root=" in res["msg"]


def test_root_change_only_when_allowed(rootfs):
    res = run(rootfs, {**MANAGED, "kernel_args": {"root": "PARTUUID=1234"}, "allow_root_change": True})
    assert res["changed"] and " root=PARTUUID=1234 " in res["append_after"]


@pytest.mark.parametrize("value", ["2048", "524288", "2048,4", "2048,force", "2048,4,force"])
def test_swiotlb_values_the_kernel_reads_as_meant(rootfs, value):
    res = run(rootfs, {**MANAGED, "kernel_args": {"swiotlb": value}})
    assert res["changed"] and res["append_after"].endswith(f"swiotlb={value}")


def test_new_argument_goes_before_the_init_separator(rootfs):
    text = conf_path(rootfs).read_text().replace("console=tty0", "console=tty0 -- single")
    conf_path(rootfs).write_text(text)
    res = run(rootfs, {**MANAGED, "kernel_args": {"swiotlb": 2048}})
    assert res["append_after"].endswith("console=tty0 swiotlb=2048 -- single")


def test_cmdline_helpers_refuse_a_split_value():
    with pytest.raises(x.ExtlinuxError, match="U\\+0020"):
        x.set_cmdline_arg("quiet", "swiotlb", "2048 init=/bin/sh")


# ---- 3. FDT and OVERLAYS confined to /boot --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"fdt": "/boot/../etc/evil.dtb"}, "fdt '/boot/../etc/evil.dtb' refused: it resolves to /etc/evil.dtb"),
        ({"fdt": "/etc/evil.dtb"}, "resolves to /etc/evil.dtb, outside /boot"),
        ({"fdt": "boot/dtb/x.dtb"}, "must be an absolute path inside /boot"),
        ({"fdt": "/boot/link.dtb"}, "resolves to /etc/evil.dtb, outside /boot"),
        ({"fdt": DTB, "overlays": ["/boot/../../etc/evil.dtb"]}, "overlay '/boot/../../etc/evil.dtb' refused"),
        ({"fdt": DTB, "overlays": ["/boot/link.dtb"]}, "overlay '/boot/link.dtb' refused"),
    ],
)
def test_fdt_and_overlays_outside_boot_refused(rootfs, args, message):
    os.symlink("../etc/evil.dtb", rootfs / "boot/link.dtb")
    before = conf_path(rootfs).read_bytes()
    res = run(rootfs, {**MANAGED, **args})
    assert res["failed"] and message in res["msg"], res["msg"]
    assert conf_path(rootfs).read_bytes() == before


def test_a_symlink_inside_boot_is_fine(rootfs):
    os.symlink("dtb/" + os.path.basename(DTB), rootfs / "boot/board.dtb")
    res = run(rootfs, {**MANAGED, "fdt": "/boot/board.dtb"})
    assert res["changed"] and res["summary"]["boot_entry"]["fdt"] == "/boot/board.dtb"


# ---- 4. writes ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG])
@pytest.mark.parametrize("failing_write", [1, 2])  # 1: the backup, 2: the new file (the backup is then removed)
def test_full_boot_partition_leaves_nothing_behind(rootfs, monkeypatch, code, failing_write):
    before = conf_path(rootfs).read_bytes()
    calls = []
    real_write = os.write

    def write(fd, data):
        calls.append(fd)
        if len(calls) == failing_write:
            raise OSError(code, os.strerror(code))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    res = run(rootfs, {**MANAGED, "kernel_args": {"swiotlb": 2048}, "backup": True})
    monkeypatch.undo()
    assert res["failed"] and f"({errno.errorcode[code]}, in " in res["msg"], res["msg"]
    assert "nothing was changed and no temporary file or backup is left" in res["msg"]
    assert conf_path(rootfs).read_bytes() == before and listing(rootfs) == ["extlinux.conf"]


def test_backups_are_bounded_and_hold_the_previous_file(rootfs):
    previous = None
    for slots in (2048, 4096, 8192, 16384, 2048):
        previous = conf_path(rootfs).read_bytes()
        res = run(rootfs, {**MANAGED, "kernel_args": {"swiotlb": slots}, "backup": True, "backup_keep": 3})
        assert res["changed"]
    backups = [f for f in listing(rootfs) if f != "extlinux.conf"]
    assert len(backups) == 3 and all(f.startswith("extlinux.conf.edgeslim-") for f in backups)
    assert Path(res["backup_file"]).read_bytes() == previous and os.path.basename(res["backup_file"]) == backups[-1]


def test_backups_of_other_tools_are_never_pruned(rootfs):
    other = rootfs / "boot/extlinux/extlinux.conf.nv-update-extlinux-backup"
    other.write_text("x")
    for slots in (2048, 4096, 8192):
        run(rootfs, {**MANAGED, "kernel_args": {"swiotlb": slots}, "backup": True, "backup_keep": 1})
    assert other.exists() and len(listing(rootfs)) == 3


def test_backup_keep_below_one_refused(rootfs):
    res = run(rootfs, {**MANAGED, "backup": True, "backup_keep": 0})
    assert res["failed"] and "backup_keep must be at least 1" in res["msg"]


def test_directory_is_fsynced_after_the_rename(rootfs, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append((stat.S_ISDIR(os.fstat(fd).st_mode), conf_path(rootfs).read_bytes()))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    res = run(rootfs, {**MANAGED, "kernel_args": {"swiotlb": 2048}})
    monkeypatch.undo()
    assert res["changed"]
    dirs = [content for is_dir, content in synced if is_dir]
    assert dirs and b"swiotlb=2048" in dirs[-1]  # after the rename: the new file is in place


@pytest.mark.parametrize(
    ("fixture", "args", "added"),
    [
        ("r38-thor.conf", {"overlays": ["/boot/edgeslim/carveouts.dtbo"]}, "OVERLAYS /boot/edgeslim/carveouts.dtbo"),
        ("r35-stock.conf", {"fdt": DTB}, f"FDT {DTB}"),
    ],
)
def test_file_without_final_newline_edited_and_restored(tmp_path, fixture, args, added):
    root = make_rootfs(tmp_path, fixture)
    # The entry being edited ends the file, without a final newline (r35: the commented backup entry cut off).
    stock = conf_path(root).read_text().split("\n\n# LABEL backup")[0].rstrip("\n").encode()
    conf_path(root).write_bytes(stock)
    res = run(root, {"label": "primary", **args})
    lines = conf_path(root).read_text().split("\n")
    assert res["changed"] and lines[-1] == f"      {added}", lines[-2:]
    assert lines[-2].startswith("      APPEND ${cbootargs}") and added not in lines[-2]
    assert res["summary"]["entries"][0]["append"] == stock.decode().split("APPEND ")[-1]
    undo = {"overlays": []} if "overlays" in args else {"fdt": ""}
    res = run(root, {"label": "primary", **undo})
    assert res["changed"] and conf_path(root).read_bytes() == stock  # still no final newline


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"LABEL primary\n  LINUX /boot/Image\n  APPEND quiet \xff\xfe\n", "is not UTF-8 text (byte 0xff at offset"),
        (b"\x7fELF\x02\x01\x01\x00\x00\x00", "contains a NUL byte (offset 7)"),
        ("LABEL primary\n  LINUX /boot/Image\n  MENU LABEL caf\u00e9\n".encode("latin-1"), "is not UTF-8 text"),
    ],
)
def test_undecodable_file_refused_naming_it(rootfs, data, message):
    conf_path(rootfs).write_bytes(data)
    res = run(rootfs, {**MANAGED, "kernel_args": {"swiotlb": 2048}})
    assert res["failed"] and res["msg"].startswith(str(conf_path(rootfs))) and message in res["msg"], res["msg"]
    assert conf_path(rootfs).read_bytes() == data


@pytest.mark.parametrize(
    ("default_line", "boots"),
    [("DEFAULT nonexistent\n", "primary"), ("", "primary")],
)
def test_default_naming_no_entry_warned_and_restored_exactly(rootfs, tmp_path, monkeypatch, default_line, boots):
    warnings: list[str] = []
    monkeypatch.setattr(extlinux.AnsibleModule, "warn", lambda _self, msg: warnings.append(msg))
    text = conf_path(rootfs).read_text().replace("DEFAULT primary\n", default_line)
    conf_path(rootfs).write_text(text)
    original = conf_path(rootfs).read_bytes()
    journal = tmp_path / "journal.json"
    res = run(rootfs, {**MANAGED, "kernel_args": {"swiotlb": 2048}, "journal_path": str(journal)})
    assert res["changed"] and res["stock_default"] == boots
    if default_line:
        assert any("DEFAULT 'nonexistent' names no entry" in w and "'primary'" in w for w in warnings), warnings
    else:
        assert not warnings
    assert json.loads(journal.read_text())["layers"]["swiotlb"]["default_line"] == (default_line[8:-1] or None)
    back = run(rootfs, {"state": "absent", "managed_label": "edgeslim", "journal_path": str(journal)})
    assert back["changed"] and conf_path(rootfs).read_bytes() == original
