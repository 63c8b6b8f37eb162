# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Validated carveout recipes per chip, and the BSP files per module (docs/carveouts.md).

Only NVIDIA's two validated scenarios exist here, ``headless`` and ``no_camera`` [SKILL-MEM]:
anything else is refused. Names are the MB1 BCT carveout macros. Two of them are doubtful
[EDK2-T234-CARVEOUTS, EDK2-T264-CARVEOUTS]:
``CARVEOUT_DCE_TSEC`` (T234) and ``CARVEOUT_RCE1`` (T264) are listed by SKILL-MEM but absent from the EDK2 UEFI enums
(T234ResourceConfigPrivate.h, T264BLParams.h); a third-party summary of NVIDIA's blog lists DCE_TSEC (1 MB) for Orin
Nano/NX. We keep them in the recipes because the BCT's own header (not UEFI's) is the authority, and the patcher
refuses any recipe name that the operator's BSP headers do not #define: an undefined macro would pass through cpp
as a literal node name and silently change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

RECIPE_NAMES = ("headless", "no_camera")
CHIPS = ("t234", "t264")


@dataclass(frozen=True)
class Recipe:
    name: str
    chip: str
    mb1_carveouts: tuple[str, ...]
    # MB2 firmware clusters whose loading is switched off (auxp_controls) [SKILL-MEM]
    mb2_clusters: tuple[str, ...]
    # Kernel DT nodes to disable, found by compatible on the live tree [SKILL-MEM]
    dt_compatibles: tuple[str, ...]
    removes: str


RECIPES: dict[tuple[str, str], Recipe] = {
    ("t234", "headless"): Recipe(
        "headless",
        "t234",
        ("CARVEOUT_BPMP_DCE", "CARVEOUT_DCE", "CARVEOUT_DCE_TSEC", "CARVEOUT_TSEC_DCE", "CARVEOUT_DISP_EARLY_BOOT_FB"),
        ("DCE",),
        ("nvidia,tegra234-display", "nvidia,tegra234-dce"),
        "display output (HDMI/DP), the UEFI splash and menu on screen; serial and SSH keep working",
    ),
    ("t234", "no_camera"): Recipe(
        "no_camera",
        "t234",
        ("CARVEOUT_RCE", "CARVEOUT_CAMERA_TASKLIST"),
        ("RCE",),
        ("nvidia,tegra234-vi", "nvidia,tegra234-isp", "nvidia,tegra234-nvcsi"),
        "CSI/GMSL cameras and libargus (nvargus-daemon); USB (UVC) cameras keep working",
    ),
    ("t264", "headless"): Recipe(
        "headless",
        "t264",
        ("CARVEOUT_DCE", "CARVEOUT_TSEC_DCE", "CARVEOUT_HPSE_DCE", "CARVEOUT_DISP_EARLY_BOOT_FB"),
        ("DCE",),
        # DCE is its own node on Thor; NVIDIA's UEFI disables both together when display is fused off
        # [EDK2-T264-FLOORSWEEP], and the DCE driver must not probe once its firmware is no longer loaded.
        ("nvidia,tegra264-display", "nvidia,tegra264-dce"),
        "display output (HDMI/DP), the UEFI splash and menu on screen; serial and SSH keep working",
    ),
    ("t264", "no_camera"): Recipe(
        "no_camera",
        "t264",
        (
            "CARVEOUT_RCE",
            "CARVEOUT_RCE1",
            "CARVEOUT_RCE_RW",
            "CARVEOUT_VI_TASKLIST",
            "CARVEOUT_VI1_TASKLIST",
            "CARVEOUT_ISP_TASKLIST",
            "CARVEOUT_ISP1_TASKLIST",
        ),
        ("RCE",),
        ("nvidia,tegra264-vi", "nvidia,tegra264-isp", "nvidia,tegra264-nvcsi"),
        "CSI/GMSL cameras and libargus (nvargus-daemon); USB (UVC) cameras keep working",
    ),
}


@dataclass(frozen=True)
class ModuleFiles:
    chip: str
    mb1: str
    mb2: str


# BSP misc DTS per module (Linux_for_Tegra/bootloader/generic/BCT/) [OE4T machine confs; SKILL-MEM]
_NANO_NX = ModuleFiles("t234", "tegra234-mb1-bct-misc-p3767-0000.dts", "tegra234-mb2-bct-misc-p3767-0000.dts")
_AGX = ModuleFiles("t234", "tegra234-mb1-bct-misc-p3701-0000.dts", "tegra234-mb2-bct-misc-p3701-0000.dts")
MODULES: dict[str, ModuleFiles] = {
    **{f"p3767-000{n}": _NANO_NX for n in (0, 1, 3, 4, 5)},
    **{f"p3701-000{n}": _AGX for n in (0, 4, 5)},
    "p3701-0008": ModuleFiles(
        "t234", "tegra234-mb1-bct-misc-p3701-0008-flash.dts", "tegra234-mb2-bct-misc-p3701-0008.dts"
    ),
    "p3834-0008": ModuleFiles(
        "t264",
        "tegra264-mb1-bct-misc-p3834-0008-p4071-0000.dts",
        "tegra264-mb2-bct-misc-p3834-xxxx-p4071-0000.dts",
    ),
    "p3834-0000": ModuleFiles(
        "t264",
        "tegra264-mb1-bct-misc-p3834-0000-p4071-0000.dts",
        "tegra264-mb2-bct-misc-p3834-xxxx-p4071-0000.dts",
    ),
}


class RecipeError(ValueError):
    """A request outside the validated recipes (unknown module, chip or recipe)."""


def module_files(module: str) -> ModuleFiles:
    try:
        return MODULES[module]
    except KeyError:
        known = ", ".join(sorted(MODULES))
        raise RecipeError(f"module {module!r} has no validated carveout recipe (known: {known})") from None


def check_device(chip: str | None, module: str | None) -> None:
    """Refuse a chip or a module without validated recipes (the chip and module jetson_info reads)."""
    if chip not in CHIPS:
        shown = f"unknown chip {chip!r}" if chip else "unknown chip"
        raise RecipeError(f"{shown}; recipes exist only for T234 and T264")
    module_files(module or "unknown")


def recipes_for(chip: str, names: list[str]) -> list[Recipe]:
    if not names:
        raise RecipeError("no recipe requested")
    out = []
    for name in names:
        if name not in RECIPE_NAMES:
            raise RecipeError(f"recipe {name!r} is not validated (only {', '.join(RECIPE_NAMES)}); refusing")
        if (chip, name) not in RECIPES:
            raise RecipeError(f"chip {chip!r} has no validated recipe {name!r}")
        out.append(RECIPES[(chip, name)])
    return out
