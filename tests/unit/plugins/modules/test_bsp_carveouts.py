"""bsp_carveouts on a reconstructed BSP tree: golden edits per chip and recipe, idempotence, refusals."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from ansible_collections.edgeslim.jetson.plugins.module_utils import bct
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
    assert res["changed"] is True, res.get("msg")
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
    header.write_text(header.read_text().replace("#define CARVEOUT_DCE_TSEC\t\t100\n", ""))
    before = digest(bsp)
    res = run({"bsp_path": str(bsp), "module": "p3767-0005", "recipes": ["headless"]})
    assert res["failed"] and "do not define CARVEOUT_DCE_TSEC" in res["msg"], res
    assert digest(bsp) == before


T234_IDS = Path("bootloader/generic/include/tegra234-carveout-ids.h")
FB_ALIAS = "#define CARVEOUT_DISP_EARLY_BOOT_FB\tCARVEOUT_CCPLEX_SMMU_PTW\n"


def edit_header(bsp: Path, old: str, new: str) -> None:
    header = bsp / T234_IDS
    text = header.read_text()
    assert old in text
    header.write_text(text.replace(old, new))


def test_header_alias_is_the_same_carveout(bsp):
    # The fixture header has EDK2's shape: DISP_EARLY_BOOT_FB defined as the name CCPLEX_SMMU_PTW (39).
    res = run({"bsp_path": str(bsp), "module": "p3767-0005", "recipes": ["headless"]})
    assert res["changed"] is True, res.get("msg")
    assert res["carveouts"]["CARVEOUT_DISP_EARLY_BOOT_FB"] == 39
    assert res["carveout_aliases"] == {"CARVEOUT_DISP_EARLY_BOOT_FB": ["CARVEOUT_CCPLEX_SMMU_PTW"]}


def test_alias_of_an_alias_resolves(bsp):
    edit_header(
        bsp,
        FB_ALIAS,
        "#define CARVEOUT_FB_OLD CARVEOUT_CCPLEX_SMMU_PTW\n#define CARVEOUT_DISP_EARLY_BOOT_FB CARVEOUT_FB_OLD\n",
    )
    res = run({"bsp_path": str(bsp), "module": "p3767-0005", "recipes": ["headless"]})
    assert res["changed"] is True, res.get("msg")
    assert res["carveouts"]["CARVEOUT_DISP_EARLY_BOOT_FB"] == 39
    assert sorted(res["carveout_aliases"]["CARVEOUT_DISP_EARLY_BOOT_FB"]) == [
        "CARVEOUT_CCPLEX_SMMU_PTW",
        "CARVEOUT_FB_OLD",
    ]


def test_two_recipe_names_for_one_carveout_emit_one_node(bsp):
    # If a header made DCE_TSEC a name of TSEC_DCE, a second aux_info@42 would be a duplicate node for dtc.
    edit_header(bsp, "#define CARVEOUT_DCE_TSEC\t\t100\n", "#define CARVEOUT_DCE_TSEC CARVEOUT_TSEC_DCE\n")
    mb1 = bsp / BCT / "tegra234-mb1-bct-misc-p3767-0000.dts"  # such a BSP lists the carveout once
    stock = mb1.read_text()
    start = stock.index("\t\t\taux_info@CARVEOUT_DCE_TSEC {")
    mb1.write_text(stock[:start] + stock[stock.index("};\n", start) + 3 :])
    res = run({"bsp_path": str(bsp), "module": "p3767-0005", "recipes": ["headless"]})
    assert res["changed"] is True, res.get("msg")
    assert res["carveouts"]["CARVEOUT_DCE_TSEC"] == res["carveouts"]["CARVEOUT_TSEC_DCE"] == 42
    block = mb1.read_text().split(bct.BEGIN)[1]
    assert block.count("aux_info@CARVEOUT_DCE_TSEC") + block.count("aux_info@CARVEOUT_TSEC_DCE") == 1


def test_suffixed_ids_are_understood(bsp):
    edit_header(bsp, "#define CARVEOUT_DCE\t\t\t20\n", "#define CARVEOUT_DCE\t\t\t20U\n")
    res = run({"bsp_path": str(bsp), "module": "p3767-0005", "recipes": ["headless"]})
    assert res["changed"] is True, res.get("msg")
    assert res["carveouts"]["CARVEOUT_DCE"] == 20


@pytest.mark.parametrize(
    ("replacement", "message"),
    [
        (
            "#define CARVEOUT_DISP_EARLY_BOOT_FB CARVEOUT_NOT_THERE\n",
            "CARVEOUT_DISP_EARLY_BOOT_FB is an alias of CARVEOUT_NOT_THERE",
        ),
        (
            "#define CARVEOUT_DISP_EARLY_BOOT_FB CARVEOUT_FB_A\n#define CARVEOUT_FB_A CARVEOUT_DISP_EARLY_BOOT_FB\n",
            "alias cycle CARVEOUT_DISP_EARLY_BOOT_FB -> CARVEOUT_FB_A -> CARVEOUT_DISP_EARLY_BOOT_FB",
        ),
        ("#define CARVEOUT_DISP_EARLY_BOOT_FB (CARVEOUT_CCPLEX_SMMU_PTW + 1)\n", "neither a carveout ID number"),
    ],
)
def test_unresolvable_alias_is_refused(bsp, replacement, message):
    edit_header(bsp, FB_ALIAS, replacement)
    before = digest(bsp)
    res = run({"bsp_path": str(bsp), "module": "p3767-0005", "recipes": ["headless"]})
    assert res["failed"] and message in res["msg"], res
    assert digest(bsp) == before


def test_same_number_under_another_name_is_refused(bsp):
    # Not declared as an alias: zeroing DCE (20) would also zero whatever else the BSP numbers 20.
    edit_header(bsp, "#define CARVEOUT_DCE\t\t\t20\n", "#define CARVEOUT_DCE\t\t\t20\n#define CARVEOUT_VPR\t20\n")
    before = digest(bsp)
    res = run({"bsp_path": str(bsp), "module": "p3767-0005", "recipes": ["headless"]})
    assert res["failed"] and "CARVEOUT_DCE = CARVEOUT_VPR (20)" in res["msg"], res
    assert digest(bsp) == before


def test_unmarked_cluster_is_refused(bsp):
    common = bsp / BCT / "tegra234-mb2-bct-common.dtsi"
    common.write_text(common.read_text().replace("/* DCE cluster (display controller engine) */", ""))
    res = run({"bsp_path": str(bsp), "module": "p3767-0005", "recipes": ["headless"]})
    assert res["failed"] and "cluster DCE" in res["msg"], res
