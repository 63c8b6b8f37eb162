# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter ``edgeslim.jetson.profile_resolve``: resolve a device class (+ extra blocks, + keep-list) from profile data.

``catalog | edgeslim.jetson.profile_resolve(name, extra_blocks, keep_units, extra_protected)`` where ``catalog`` is
``{"dir": str, "classes": {name: yaml_text}, "blocks": {name: yaml_text}, "protected": yaml_text}`` (the role reads
the files with lookups). Returns ``{"errors": [...], "profile": {...} | None}`` so the role can fail with every
problem listed at once, before any host is touched. Contract 3 (docs/profiles.md) defines ``profile``.
Pure: no I/O, PyYAML only (always present with ansible-core).
"""

from __future__ import annotations

import fnmatch
import os
import re
from typing import Any

import yaml

DOCUMENTATION = r"""
name: profile_resolve
short_description: Resolve an edgeslim device class into the edgeslim_profile structure
version_added: 0.1.0
author: edgeslim maintainers
description:
  - Validates the profile data (device class, building blocks, protected list) and the inputs, and merges the
    blocks into C(services.disable/mask/keep), C(default_target), C(swiotlb), C(carveouts) (see docs/profiles.md).
  - Never raises for bad data; returns C(errors), a list of messages naming the file and the problem.
options:
  _input:
    description: Catalog C({dir, classes, blocks, protected}) with the YAML text of each file.
    type: dict
    required: true
  name:
    description: Device class name.
    type: str
    required: true
  extra_blocks:
    description: Blocks added after the class's blocks.
    type: list
    elements: str
  keep_units:
    description: Units to keep.
    type: list
    elements: str
  extra_protected:
    description: Units (or shell-style patterns) protected in addition to the protected list.
    type: list
    elements: str
"""

EXAMPLES = r"""
edgeslim_profile: "{{ (catalog | edgeslim.jetson.profile_resolve('warehouse_robot', [], ['bluetooth'])).profile }}"
"""

RETURN = r"""
_value:
  description: C({errors, profile}).
  type: dict
"""

_UNIT_SUFFIXES = ("service", "socket", "target", "timer", "path", "mount", "automount", "swap", "device", "slice")
_UNIT_RE = re.compile(r"^[A-Za-z0-9:_.\\@-]+$")
_PATTERN_RE = re.compile(r"^[A-Za-z0-9:_.\\@*?\[\]!-]+$")  # protected entries may be fnmatch patterns
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
BLOCK_KEYS = {"name", "description", "services", "swiotlb", "carveouts", "journald"}
CLASS_KEYS = {"name", "description", "blocks", "swiotlb", "carveouts"}
UNIT_KEYS = {"name", "why", "source", "mask", "companions", "estimate_mb"}


def _unit(name: Any, pattern: bool = False) -> str | None:
    if not isinstance(name, str) or not name.strip() or not (_PATTERN_RE if pattern else _UNIT_RE).match(name.strip()):
        return None
    name = name.strip()
    if "." not in name or name.rsplit(".", 1)[1] not in _UNIT_SUFFIXES:
        name += ".service"
    return name


def _parse(path: str, text: Any, errors: list[str]) -> Any:
    if text is None:
        errors.append(f"{path}: missing")
        return None
    if not isinstance(text, str):  # already parsed (e.g. a caller passing data, not text)
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        errors.append(f"{path}: not valid YAML: {' '.join(str(exc).split())}")
    return None


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _check_block(path: str, name: str, data: Any, errors: list[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        errors.append(f"{path}: a block must be a mapping, got {type(data).__name__}")
        return {}
    for key in sorted(set(data) - BLOCK_KEYS):
        errors.append(f"{path}: unknown key {key!r} (allowed: {', '.join(sorted(BLOCK_KEYS))})")
    if data.get("name") != name:
        errors.append(f"{path}: 'name' must be {name!r} (the file name), got {data.get('name')!r}")
    services = data.get("services") or {}
    if not isinstance(services, dict):
        errors.append(f"{path}: 'services' must be a mapping")
        services = {}
    target = services.get("default_target")
    if target is not None and (not isinstance(target, str) or not target.endswith(".target")):
        errors.append(f"{path}: services.default_target must name a .target unit, got {target!r}")
    units = services.get("units") or []
    if not isinstance(units, list):
        errors.append(f"{path}: services.units must be a list")
        units = []
    for index, unit in enumerate(units):
        where = f"{path}: services.units[{index}]"
        if not isinstance(unit, dict):
            errors.append(f"{where} must be a mapping with name/why/source")
            continue
        for key in sorted(set(unit) - UNIT_KEYS):
            errors.append(f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(UNIT_KEYS))})")
        if _unit(unit.get("name")) is None:
            errors.append(f"{where}: 'name' must be a systemd unit name, got {unit.get('name')!r}")
        for key in ("why", "source"):
            if not isinstance(unit.get(key), str) or not unit.get(key).strip():
                errors.append(f"{where} ({unit.get('name')}): {key!r} is required (say why, cite the source tag)")
        if "mask" in unit and not isinstance(unit["mask"], bool):
            errors.append(f"{where} ({unit.get('name')}): 'mask' must be a boolean, got {unit['mask']!r}")
        companions = unit.get("companions", [])
        if not _is_str_list(companions) or any(_unit(c) is None for c in companions):
            errors.append(f"{where} ({unit.get('name')}): 'companions' must be a list of unit names")
        if "estimate_mb" in unit and (
            isinstance(unit["estimate_mb"], bool) or not isinstance(unit["estimate_mb"], int | float)
        ):
            errors.append(f"{where} ({unit.get('name')}): 'estimate_mb' must be a number")
    _check_sections(path, data, errors)
    return data


def _check_sections(path: str, data: dict[str, Any], errors: list[str]) -> None:
    swiotlb = data.get("swiotlb")
    if swiotlb is not None:
        size = swiotlb.get("size_mib") if isinstance(swiotlb, dict) else None
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            errors.append(f"{path}: swiotlb.size_mib must be a positive integer (never 0 [SKILL-MEM]), got {size!r}")
    carveouts = data.get("carveouts")
    if carveouts is not None and not (isinstance(carveouts, dict) and _is_str_list(carveouts.get("recipes"))):
        errors.append(f"{path}: carveouts must be {{recipes: [<recipe>, ...]}}")
    journald = data.get("journald")
    if journald is not None and not (
        isinstance(journald, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in journald.items())
    ):
        errors.append(f"{path}: journald must map journald.conf [Journal] keys to string values")


def resolve_profile(
    catalog: dict[str, Any],
    name: Any,
    extra_blocks: Any = None,
    keep_units: Any = None,
    extra_protected: Any = None,
) -> dict[str, Any]:
    errors: list[str] = []
    extra_blocks = [] if extra_blocks is None else extra_blocks
    keep_units = [] if keep_units is None else keep_units
    extra_protected = [] if extra_protected is None else extra_protected
    profile_dir = str(catalog.get("dir", "profiles"))
    classes_dir = os.path.join(profile_dir, "classes")
    blocks_dir = os.path.join(profile_dir, "blocks")
    classes_text, blocks_text = catalog.get("classes") or {}, catalog.get("blocks") or {}
    known_classes, known_blocks = sorted(classes_text), sorted(blocks_text)
    if not known_classes:
        return {"errors": [f"no device classes found in {classes_dir} (profile_dir={profile_dir!r})"], "profile": None}
    # -- argument types (the role's argument_specs checks them too; this covers direct use of the filter)
    if not isinstance(name, str) or not name:
        errors.append(f"profile_name must be a non-empty string, got {name!r}")
    elif name not in known_classes:
        errors.append(f"unknown profile {name!r}; known device classes: {', '.join(known_classes)}")
    for what, value in (
        ("profile_extra_blocks", extra_blocks),
        ("profile_keep_units", keep_units),
        ("profile_extra_protected_units", extra_protected),
    ):
        if not _is_str_list(value):
            errors.append(f"{what} must be a list of strings, got {value!r}")
    if errors:
        return {"errors": errors, "profile": None}
    bad = [u for u in keep_units if _unit(u) is None] + [u for u in extra_protected if _unit(u, True) is None]
    if bad:
        errors.append(f"not systemd unit names: {', '.join(map(str, bad))}")
    for block in extra_blocks:
        if block not in known_blocks:
            errors.append(f"unknown block {block!r} in profile_extra_blocks; known blocks: {', '.join(known_blocks)}")
    # -- protected list (data)
    protected_path = os.path.join(profile_dir, "protected.yml")
    pdata = _parse(protected_path, catalog.get("protected"), errors)
    protected: list[str] = []
    plist = pdata.get("protected") if isinstance(pdata, dict) else None
    if not isinstance(plist, list) or not all(isinstance(p, dict) and _unit(p.get("name"), True) for p in plist):
        errors.append(f"{protected_path}: must be {{protected: [{{name: <unit or pattern>, why: <text>}}, ...]}}")
    else:
        protected = [_unit(p["name"], True) for p in plist]
    protected += [_unit(u, True) for u in extra_protected if _unit(u, True)]
    # -- class
    class_path = os.path.join(classes_dir, name + ".yml")
    cdata = _parse(class_path, classes_text[name], errors)
    if not isinstance(cdata, dict):
        errors.append(f"{class_path}: a device class must be a mapping")
        return {"errors": errors, "profile": None}
    for key in sorted(set(cdata) - CLASS_KEYS):
        errors.append(f"{class_path}: unknown key {key!r} (allowed: {', '.join(sorted(CLASS_KEYS))})")
    if cdata.get("name") != name:
        errors.append(f"{class_path}: 'name' must be {name!r}, got {cdata.get('name')!r}")
    class_blocks = cdata.get("blocks") or []
    if not _is_str_list(class_blocks):
        errors.append(f"{class_path}: 'blocks' must be a list of block names")
        class_blocks = []
    for block in class_blocks:
        if block not in known_blocks:
            errors.append(f"{class_path}: unknown block {block!r}; known blocks: {', '.join(known_blocks)}")
    _check_sections(class_path, cdata, errors)
    blocks = []
    for block in class_blocks + extra_blocks:
        if block in known_blocks and block not in blocks:
            blocks.append(block)
    # -- merge the blocks
    keep = [_unit(u) for u in keep_units if _unit(u)]
    disable: list[str] = []
    mask: list[str] = []
    units_info: dict[str, dict[str, Any]] = {}
    per_block: dict[str, list[str]] = {}
    targets: dict[str, str] = {}
    swiotlb: dict[str, Any] | None = None
    swiotlb_from = None
    recipes: list[str] = []
    journald: dict[str, str] = {}
    volatile_from: list[str] = []
    for block in blocks:
        path = os.path.join(blocks_dir, block + ".yml")
        data = _check_block(path, block, _parse(path, blocks_text[block], errors), errors)
        services = data.get("services") if isinstance(data.get("services"), dict) else {}
        if services.get("default_target"):
            targets[block] = services["default_target"]
        per_block[block] = []
        for unit in services.get("units") or []:
            if not isinstance(unit, dict) or _unit(unit.get("name")) is None:
                continue
            main = _unit(unit["name"])
            companions = [_unit(c) for c in unit.get("companions", []) if isinstance(c, str) and _unit(c)]
            for uname in [main, *companions]:
                hit = [p for p in protected if fnmatch.fnmatchcase(uname, p)]
                if hit:
                    by = "" if hit == [uname] else f" (protected by {', '.join(hit)})"
                    errors.append(f"block {block!r} names protected unit {uname}{by}; remove it from {path}")
                    continue
                per_block[block].append(uname)
                info = units_info.setdefault(
                    uname,
                    {
                        "block": block,
                        "why": unit.get("why"),
                        "source": unit.get("source"),
                        "mask": False,
                        "companion_of": None if uname == main else main,
                        "estimate_mb": unit.get("estimate_mb") if uname == main else None,
                    },
                )
                info["mask"] = info["mask"] or unit.get("mask") is True
        if isinstance(data.get("swiotlb"), dict):
            if swiotlb is not None and swiotlb != data["swiotlb"]:
                errors.append(f"blocks {swiotlb_from!r} and {block!r} ask for different SWIOTLB sizes")
            swiotlb, swiotlb_from = dict(data["swiotlb"]), block
        if isinstance(data.get("carveouts"), dict):
            recipes += [r for r in data["carveouts"].get("recipes", []) if r not in recipes]
        if isinstance(data.get("journald"), dict):
            journald.update(data["journald"])
            if str(data["journald"].get("Storage", "")).lower() == "volatile":
                volatile_from.append(block)
    if len(set(targets.values())) > 1:
        errors.append(f"blocks disagree on the default target: {targets}")
    for uname, info in units_info.items():
        if uname in keep:
            continue
        (mask if info["mask"] else disable).append(uname)
    per_block = {block: [u for u in units if u not in keep] for block, units in per_block.items()}
    # A volatile journal lives in /run (tmpfs, RAM): it costs memory. It only pays off by replacing rsyslog's second
    # copy of every log line, so a block that keeps logs in RAM must also stop rsyslog.
    for block in volatile_from:
        if "rsyslog.service" not in per_block.get(block, []):
            errors.append(
                f"block {block!r} keeps the journal in RAM (journald Storage=volatile), which saves memory only with "
                "rsyslog.service disabled in the same block, and rsyslog.service is not (kept by profile_keep_units, "
                "or not listed); drop the block or the keep"
            )
    # class-level sections override the blocks' (null switches a layer off for this class)
    if "swiotlb" in cdata:
        swiotlb = dict(cdata["swiotlb"]) if isinstance(cdata["swiotlb"], dict) else None
    carveouts = {"recipes": recipes} if recipes else None
    if "carveouts" in cdata:
        carveouts = dict(cdata["carveouts"]) if isinstance(cdata["carveouts"], dict) else None
    if errors:
        return {"errors": errors, "profile": None}
    return {
        "errors": [],
        "profile": {
            "name": name,
            "description": cdata.get("description", ""),
            "blocks": blocks,
            "services": {
                "default_target": next(iter(targets.values()), None),
                "default_target_block": next(iter(targets), None),
                "disable": disable,
                "mask": mask,
                "keep": keep,
                "units": units_info,
                "blocks": per_block,
            },
            "protected": protected,
            "swiotlb": swiotlb,
            "carveouts": carveouts,
            "journald": journald or None,
        },
    }


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"profile_resolve": resolve_profile}
