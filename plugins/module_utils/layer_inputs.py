# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Input refusals of the boot layers, decided from what is known before any change (pure Python).

One copy of each check: the filters (``swiotlb_slots``, ``reboot_policy_errors``, ``carveouts_fdt_method``,
``layer_refusals``), the pre-flight role and the layer roles all call these functions, so a run of
``edgeslim.jetson.slim`` refuses a bad input of any boot layer before the services layer changes anything, and a
layer role used on its own refuses the same inputs before its own first change (docs/reliability.md).

What needs the device is passed in, read-only: ``jetson_info`` (chip, module, L4T release) and ``swiotlb_info`` (the
SWIOTLB pool's high-water mark). What needs the boot files (the entry's FDT and OVERLAYS lines) or the live device
tree's nodes stays with the carveouts role and the ``dt_overlay`` module.
"""

from __future__ import annotations

import re
from typing import Any

from ansible_collections.edgeslim.jetson.plugins.module_utils.carveout_recipes import (
    RECIPE_NAMES,
    RecipeError,
    check_device,
    recipes_for,
)
from ansible_collections.edgeslim.jetson.plugins.module_utils.extlinux import SWIOTLB_MAX_SLOTS
from ansible_collections.edgeslim.jetson.plugins.module_utils.swiotlb import MIB, SLOT_BYTES, mib_to_slots

LAYERS = ("swiotlb", "carveouts")
LAYER_TITLES = {"swiotlb": "SWIOTLB", "carveouts": "carveouts"}
# The bound the extlinux module enforces on swiotlb= (1 GiB): the pool is one boot-time allocation from low memory.
SWIOTLB_MAX_MIB = SWIOTLB_MAX_SLOTS * SLOT_BYTES // MIB
POLICY_ACCEPTED = ("true", "false", "yes", "no", "1", "0")
FDT_METHODS = ("auto", "overlays", "merged")
OVERLAYS_SINCE = (36, 2)  # L4TLauncher reads OVERLAYS from the r36.2 tag on [EDK2-L4TLAUNCHER-OVERLAYS]
_WHOLE = re.compile(r"[0-9]+\Z")


def show(value: Any) -> str:
    """The value and the plain kind the user wrote (Ansible 2.19 hands tagged subclasses such as _AnsibleTaggedStr)."""
    for kind in (bool, str, int, float, list, dict):
        if isinstance(value, kind):
            return f"{kind(value)!r} ({kind.__name__})"
    return repr(value)


def whole_number(value: Any) -> int | None:
    """A whole number >= 0 as YAML or -e gives it (int, or a string of ASCII digits); None for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    text = str(value).strip()
    return int(text) if _WHOLE.match(text) else None


def policy_unset(value: Any) -> bool:
    """A reboot policy nobody decided: null or empty (a role default rendered from an undefined one may read 'None')."""
    return value is None or (isinstance(value, str) and value.strip() in ("", "None"))


def policy_source(settings: dict, layer: str) -> tuple[str, Any]:
    """The variable that decides a boot layer's reboot policy and its value: ``<layer>_reboot_ok`` when the user set
    it (not null, not the empty string), else ``edgeslim_reboot_ok`` (the layer inherits the common policy)."""
    name = f"{layer}_reboot_ok"
    value = settings.get(name)
    if value is None or value == "":
        return "edgeslim_reboot_ok", settings.get("edgeslim_reboot_ok")
    return name, value


def reboot_policy(settings: dict, layer: str) -> bool | None:
    """The effective reboot policy of a boot layer (``policy_source``): True reboots in this run, False leaves the
    change pending for a maintenance window, None = undecided (``policy_unset``). The one definition the engine, the
    pre-flight refusals, the rollback's single reboot and the metrics file use.

    Strictness is ``reboot_policy_errors``' check, made before any change: a value it refuses reads False here."""
    value = policy_source(settings, layer)[1]
    if policy_unset(value):
        return None
    return _truthy(value)


def reboot_policy_errors(values: dict) -> list[str]:
    """One message per reboot-policy value set but not a strict boolean (Jinja's bool reads 'maybe' as false)."""
    errors = []
    for name in sorted(values):
        value = values[name]
        if value is None or value == "" or isinstance(value, bool):
            continue
        if isinstance(value, int) and value in (0, 1):
            continue
        if isinstance(value, str) and value.strip().lower() in POLICY_ACCEPTED:
            continue
        errors.append(f"{name} must be true or false (or yes/no, 1/0), got {show(value)}; nothing was changed")
    return errors


def swiotlb_size_error(size: Any, min_mib: int = 1, name: str = "swiotlb_size_mib", min_name: str = "") -> str | None:
    """Why a SWIOTLB pool size in MiB is refused, or None: whole MiB, min_mib..SWIOTLB_MAX_MIB, never 0."""
    mib = whole_number(size)
    if mib is not None and mib > 0 and max(min_mib, 1) <= mib <= SWIOTLB_MAX_MIB:
        return None
    shown = "unset" if size is None or size == "" else f"{size} MiB"
    floor = f"at least {min_mib} ({min_name})" if min_name else f"at least {max(min_mib, 1)}"
    return (f"{name}: SWIOTLB size {shown} refused: it must be a whole number of MiB, {floor} and at most "
            f"{SWIOTLB_MAX_MIB} (the pool is one boot-time allocation from low memory), never 0 (some peripherals "
            "cannot use the IOMMU)")  # fmt: skip


def swiotlb_usage_error(mib: int, slots: int, use: dict, debugfs_path: str) -> str | None:
    """Why a pool of ``slots`` is refused below the high-water mark ``swiotlb_info`` read, or None."""
    peak = use.get("peak_slots")
    if peak is None or slots >= int(peak):
        return None
    recommended = (use.get("recommendation") or {}).get("size_mib") or "?"
    return (f"SWIOTLB size {mib} MiB ({slots} slots) refused: it is below the high-water mark observed on this "
            f"device, {peak} slots ({round(use.get('peak_mib') or 0, 2)} MiB, {use.get('peak_source')} in "
            f"{debugfs_path}). Size it with playbooks/audit.yml under the real workload (it recommends {recommended} "
            "MiB now), or set swiotlb_force_below_usage: true to apply it anyway")  # fmt: skip


def resolve_fdt_method(requested: str, l4t: dict | None) -> dict:
    """The carveouts FDT method for this L4T release: {method, error} (error set = refused)."""
    if requested not in FDT_METHODS:
        return {
            "method": None,
            "error": f"carveouts_fdt_method {requested!r}: expected one of {', '.join(FDT_METHODS)}",
        }
    release = None
    if l4t and l4t.get("major") is not None:
        release = (int(l4t["major"]), int(l4t.get("minor") or 0))
    version = (l4t or {}).get("version") or (f"R{release[0]}.{release[1]}" if release else "unknown")
    if requested == "merged":
        return {"method": "merged", "error": None}
    if release is None:
        if requested == "overlays":
            return {"method": "overlays", "error": None}  # not an L4T rootfs we can read: the operator's choice
        return {"method": None, "error": "carveouts_fdt_method auto: the L4T release is unknown (no "
                "/etc/nv_tegra_release), so it cannot tell whether L4TLauncher applies OVERLAYS (R36.2 and later); "
                "set carveouts_fdt_method to merged (any release) or overlays (R36.2 and later)"}  # fmt: skip
    supported = release >= OVERLAYS_SINCE
    if requested == "auto":
        return {"method": "overlays" if supported else "merged", "error": None}
    if not supported:
        return {"method": None, "error": f"carveouts_fdt_method overlays refused on L4T {version}: L4TLauncher "
                "applies the OVERLAYS line of extlinux.conf only from R36.2 on (R35.x ignores it silently, so the "
                "nodes would stay enabled and the device would revert the change); use merged or auto"}  # fmt: skip
    return {"method": "overlays", "error": None}


def carveouts_recipe_errors(names: Any, source: str, info: dict | None) -> list[str]:
    """Why the requested recipes are refused: none, not validated, or not validated for this chip and module."""
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        shown = show(names) if names else "unset"
        return [f"{source}: carveout recipes {shown} refused: name a list of {' and/or '.join(RECIPE_NAMES)} in "
                "carveouts_recipes or in the profile's carveouts.recipes"]  # fmt: skip
    unknown = [n for n in names if n not in RECIPE_NAMES]
    if unknown:
        return [f"{source}: carveout recipes {unknown} refused: only the validated recipes "
                f"{' and '.join(RECIPE_NAMES)} exist [NVIDIA jetson-optimize-memory]"]  # fmt: skip
    if info is None:
        return []
    try:
        check_device(info.get("soc"), (info.get("module") or {}).get("module"))
        recipes_for(info["soc"], names)
    except RecipeError as exc:
        return [f"{source}: carveout recipes {names} refused on this device: {exc}"]
    return []


def _profile_block(profile: Any, layer: str) -> dict:
    block = profile.get(layer) if isinstance(profile, dict) else None
    return block if isinstance(block, dict) else {}


def _policy(layer: str, settings: dict, check_mode: bool, out: dict) -> None:
    name = f"{layer}_reboot_ok"
    value = policy_source(settings, layer)[1]
    common = settings.get("edgeslim_reboot_ok")
    # A layer policy inherited from a refused edgeslim_reboot_ok (unset, or the role default rendered from it) is
    # reported once, under the name the user set.
    if policy_unset(value):
        value = None
    errors = reboot_policy_errors({"edgeslim_reboot_ok": common} if value == common else {name: value})
    out["refused"].extend(e for e in errors if e not in out["refused"])
    if errors or reboot_policy(settings, layer) is not None:
        return
    title = LAYER_TITLES[layer]
    decide = (f"set edgeslim_reboot_ok (or {name}) to true to reboot in this play, or to false to record it as "
              "pending for your maintenance window")  # fmt: skip
    if check_mode:
        out["warnings"].append(f"the {title} layer needs a reboot decision; check mode plans it only (status planned): "
                               f"before the real run, {decide}")  # fmt: skip
    else:
        out["refused"].append(f"the {title} layer needs a reboot to take effect: {decide}")


def _swiotlb(settings: dict, profile: Any, use: dict | None, out: dict) -> None:
    size = settings.get("swiotlb_size_mib")
    source = "swiotlb_size_mib"
    if size is None or size == "":
        size = _profile_block(profile, "swiotlb").get("size_mib")
        source = "swiotlb_size_mib (unset) / the profile's swiotlb.size_mib"
    min_mib = whole_number(settings.get("swiotlb_min_mib", 1))
    if not min_mib:
        out["refused"].append(f"swiotlb_min_mib {show(settings.get('swiotlb_min_mib'))} refused: a whole number of "
                              "MiB greater than 0 (NVIDIA's published shrink is 4 MiB)")  # fmt: skip
        return
    error = swiotlb_size_error(size, min_mib, source, "swiotlb_min_mib")
    if error:
        out["refused"].append(error)
        return
    mib = int(size)
    out["swiotlb_mib"] = mib
    out["swiotlb_slots"] = mib_to_slots(mib)
    if use and not _truthy(settings.get("swiotlb_force_below_usage")):
        error = swiotlb_usage_error(mib, out["swiotlb_slots"], use, settings.get("swiotlb_debugfs_path") or "debugfs")
        if error:
            out["refused"].append(error)


def _carveouts(settings: dict, profile: Any, info: dict | None, out: dict) -> None:
    names = settings.get("carveouts_recipes")
    source = "carveouts_recipes"
    if not names:
        names = _profile_block(profile, "carveouts").get("recipes") or []
        source = "carveouts_recipes (empty) / the profile's carveouts.recipes"
    errors = carveouts_recipe_errors(names, source, info)
    out["refused"].extend(errors)
    if not errors:
        out["carveouts_recipes"] = list(names)
    requested = settings.get("carveouts_fdt_method", "auto")
    if info is None or not isinstance(requested, str):
        if not isinstance(requested, str):
            out["refused"].append(f"carveouts_fdt_method {show(requested)}: expected one of {', '.join(FDT_METHODS)}")
        return
    method = resolve_fdt_method(requested, info.get("l4t") if isinstance(info.get("l4t"), dict) else None)
    if method["error"]:
        out["refused"].append(f"{method['error']} [EDK2-L4TLAUNCHER-OVERLAYS]")
    out["carveouts_fdt_method"] = method["method"]


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, (int, str)) and str(value).strip().lower() in ("true", "yes", "1"))


def layer_refusals(
    layers: list,
    settings: dict,
    profile: Any = None,
    info: dict | None = None,
    swiotlb_use: dict | None = None,
    check_mode: bool = False,
) -> dict:
    """Every input refusal of the boot ``layers`` this run applies, before any change.

    ``settings`` maps the layers' variable names to their values as the roles resolve them; ``profile`` is the
    resolved edgeslim_profile; ``info`` the jetson_info result (chip, module and L4T checks are skipped without it);
    ``swiotlb_use`` the swiotlb_info result (the high-water check is skipped without it). Returns ``refused`` and
    ``warnings`` (lists of messages) and the accepted values the roles go on with (``swiotlb_mib``, ``swiotlb_slots``,
    ``carveouts_recipes``, ``carveouts_fdt_method``; None when refused or not requested).
    """
    out: dict = {"refused": [], "warnings": [], "swiotlb_mib": None, "swiotlb_slots": None,
                 "carveouts_recipes": None, "carveouts_fdt_method": None}  # fmt: skip
    for layer in layers:
        if layer not in LAYERS:
            continue  # services (and layers of later versions) refuse their own inputs
        if layer == "swiotlb":
            _swiotlb(settings, profile, swiotlb_use, out)
        else:
            _carveouts(settings, profile, info, out)
        _policy(layer, settings, check_mode, out)
    return out
