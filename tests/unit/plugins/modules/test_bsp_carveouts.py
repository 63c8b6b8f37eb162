"""bsp_carveouts on a reconstructed BSP tree: golden edits per chip and recipe, idempotence, refusals."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from ansible_collections.edgeslim.jetson.plugins.modules import bsp_carveouts
from modhelper import run_module

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "bsp"
GOLDEN = FIXTURES / "golden"
BCT = Path("bootloader/generic/BCT")
CASES = [
    ("p3767-0005", ["headless"]),
    ("p3767-0005", ["no_camera"]),
    ("p3767-0005", ["headless", "no_camera"]),
    ("p3701-0005", ["headless", "no_camera"]),
    ("p3834-0008", ["headless"]),
    ("p3834-0008", ["no_camera"]),
    ("p3834-0008", ["headless", "no_camera"]),
]


@pytest.fixture
def bsp(tmp_path) -> Path:
    root = tmp_path / "Linux_for_Tegra"
    shutil.copytree(FIXTURES / "Linux_for_Tegra", root)
    return root


def run(args: dict, check: bool = False) -> dict:
    return run_module(bsp_carveouts.main, {"backup": False, **args}, check=check, diff=True)


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def compiles(path: Path, root: Path) -> None:
    inc = [root / "bootloader", root / "bootloader/generic/include", root / "bootloader/generic/BCT"]
    argv = ["cpp", "-nostdinc", "-undef", "-x", "assembler-with-cpp", "-D__DTS__", "-P"]
    for d in inc:
        argv += ["-I", str(d)]
    pre = subprocess.run([*argv, str(path)], check=True, capture_output=True, text=True).stdout
    subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", os.devnull, "-"], input=pre, check=True, text=True)


@pytest.mark.parametrize(("module", "recipes"), CASES)
def test_golden_edit_compiles_and_is_idempotent(bsp, module, recipes):
    res = run({"bsp_path": str(bsp), "module": module, "recipes": recipes})
    assert res["changed"] is True, res
    golden = GOLDEN / f"{module}-{'+'.join(recipes)}"
    for entry in res["files"]:
        path = Path(entry["path"])
        expected = golden / path.name
        if os.environ.get("EDGESLIM_REGEN_GOLDEN"):
            expected.parent.mkdir(parents=True, exist_ok=True)
            expected.write_text(path.read_text())
        assert path.read_text() == expected.read_text(), f"{path.name} differs from {expected}"
        compiles(path, bsp)
    again = run({"bsp_path": str(bsp), "module": module, "recipes": recipes})
    assert again["changed"] is False


def test_empty_recipes_restore_the_stock_files(bsp):
    before = digest(bsp)
    run({"bsp_path": str(bsp), "module": "p3767-0005", "recipes": ["headless", "no_camera"]})
    assert digest(bsp) != before
    res = run({"bsp_path": str(bsp), "module": "p3767-0005", "recipes": []})
    assert res["changed"] is True
    assert digest(bsp) == before


def test_check_mode_changes_nothing_and_shows_the_diff(bsp):
    before = digest(bsp)
    res = run({"bsp_path": str(bsp), "module": "p3834-0008", "recipes": ["headless"]}, check=True)
    assert res["changed"] is True
    assert digest(bsp) == before
    assert any("aux_info@CARVEOUT_DCE" in d["after"] for d in res["diff"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"module": "p3767-0005", "recipes": ["no_wifi"]}, "not validated"),
        ({"module": "p9999-0000", "recipes": ["headless"]}, "has no validated carveout recipe"),
    ],
)
def test_bad_requests_are_refused(bsp, args, message):
    before = digest(bsp)
    res = run({"bsp_path": str(bsp), **args})
    assert res["failed"] and message in res["msg"]
    assert digest(bsp) == before


def test_missing_bsp_files_are_refused(bsp):
    (bsp / BCT / "tegra234-mb2-bct-misc-p3767-0000.dts").unlink()
    before = digest(bsp)
    res = run({"bsp_path": str(bsp), "module": "p3767-0005", "recipes": ["headless"]})
    assert res["failed"] and "BSP file missing" in res["msg"]
    assert digest(bsp) == before


def test_carveout_unknown_to_the_bsp_headers_is_refused(bsp):
    header = bsp / "bootloader/generic/include/tegra234-carveout-ids.h"
    header.write_text(header.read_text().replace("#define CARVEOUT_DCE_TSEC\t\t43\n", ""))
    before = digest(bsp)
    res = run({"bsp_path": str(bsp), "module": "p3767-0005", "recipes": ["headless"]})
    assert res["failed"] and "do not define CARVEOUT_DCE_TSEC" in res["msg"], res
    assert digest(bsp) == before


def test_alias_is_refused(bsp):
    header = bsp / "bootloader/generic/include/tegra234-carveout-ids.h"
    header.write_text(header.read_text().replace("CARVEOUT_DISP_EARLY_BOOT_FB\t57", "CARVEOUT_DISP_EARLY_BOOT_FB\t39"))
    res = run({"bsp_path": str(bsp), "module": "p3767-0005", "recipes": ["headless"]})
    assert res["failed"] and "CARVEOUT_CCPLEX_SMMU_PTW" in res["msg"], res


def test_unmarked_cluster_is_refused(bsp):
    common = bsp / BCT / "tegra234-mb2-bct-common.dtsi"
    common.write_text(common.read_text().replace("/* DCE cluster (display controller engine) */", ""))
    res = run({"bsp_path": str(bsp), "module": "p3767-0005", "recipes": ["headless"]})
    assert res["failed"] and "cluster DCE" in res["msg"], res
