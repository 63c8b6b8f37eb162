# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Device side of the carveouts layer: a DT overlay that disables the recipes' kernel nodes (docs/carveouts.md).

From the live device tree (the kernel's fs layout, /sys/firmware/devicetree/base) the nodes of the chosen recipes are
found **by compatible** (carveout_recipes.py, never by hard-coded path [SKILL-MEM]) and an overlay
source is generated with one fragment per node: ``target-path`` = the node's full path, ``__overlay__`` sets
``status = "disabled"``. Nothing outside a validated recipe is planned; an unknown chip or module is refused.

Why target-path fragments without ``board_config``: NVIDIA's UEFI applies every OVERLAYS file of the extlinux entry
through ``ApplyTegraDeviceTreeOverlay``; a fragment without a ``board_config`` child is applied unconditionally, and
``target-path`` is resolved on the base tree (EDK2 ``TegraDeviceTreeOverlayLibCommon.c`` ``ProcessOverlayDeviceTree``,
then libfdt ``fdt_overlay_apply``; L4TLauncher ``OVERLAYS`` handling). No phandles are involved, so the overlay needs
no ``__fixups__`` and does not depend on the base DTB being built with symbols (``-@``).

Also here: a minimal flattened-device-tree (DTB) reader, so a .dtbo compiled elsewhere (on the controller) is
checked on the device against the plan before it is installed, and the live-tree status check used after the reboot.
Pure Python.
"""

from __future__ import annotations

import os
import struct
import tempfile
from dataclasses import dataclass, field
from typing import Callable

from ansible_collections.edgeslim.jetson.plugins.module_utils import devicetree as dt
from ansible_collections.edgeslim.jetson.plugins.module_utils import l4t
from ansible_collections.edgeslim.jetson.plugins.module_utils.carveout_recipes import (
    RecipeError,
    check_device,
    recipes_for,
)
from ansible_collections.edgeslim.jetson.plugins.module_utils.extlinux_edit import fsync_dir

OVERLAY_NAME = "edgeslim carveouts"


class OverlayError(ValueError):
    """The overlay cannot be planned or a compiled overlay does not match the plan; nothing is installed."""


@dataclass(frozen=True)
class Target:
    path: str  # full node path in the live tree, e.g. /bus@0/display@13800000
    compatible: str  # the recipe compatible it matched
    recipe: str
    status: str  # status in the live tree now ("okay" when the property is absent, per the DT spec)

    def as_dict(self) -> dict:
        return {"path": self.path, "compatible": self.compatible, "recipe": self.recipe, "status": self.status}


@dataclass
class Plan:
    chip: str
    module: str
    recipes: list[str]
    targets: list[Target] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return [t.path for t in self.targets]

    @property
    def pending(self) -> list[str]:
        """Nodes the live tree does not show disabled yet."""
        return [t.path for t in self.targets if t.status != "disabled"]


def node_status(root: str, path: str) -> str | None:
    """status of a node in the live tree; None when the node does not exist; "okay" when the property is absent."""
    node = os.path.join(root, path.lstrip("/"))
    if not os.path.isdir(node):
        return None
    return dt.string(dt.read_prop(node, "status")) or "okay"


def plan(root: str, recipe_names: list[str]) -> Plan:
    """Nodes to disable for ``recipe_names`` on the device whose live tree is at ``root``."""
    if not os.path.isdir(root):
        raise OverlayError(f"{root}: no device tree here (is this a Jetson with /sys/firmware/devicetree/base?)")
    compatible = dt.compatible_of(root)
    ident = l4t.identify(compatible)
    try:
        check_device(ident["soc"], ident["module"])
        recipes = recipes_for(ident["soc"], list(recipe_names))
    except RecipeError as exc:
        raise OverlayError(f"{exc} (root compatible {compatible})") from None
    out = Plan(ident["soc"], ident["module"], [r.name for r in recipes])
    seen: set[str] = set()
    for recipe in recipes:
        found = 0
        for compat in recipe.dt_compatibles:
            for path in dt.find_compatible(root, [compat]):
                found += 1
                if path in seen:
                    continue
                seen.add(path)
                out.targets.append(Target(path, compat, recipe.name, node_status(root, path) or "okay"))
        if not found:
            # A recipe that matches nothing means a device tree we do not know: refuse rather than claim success.
            raise OverlayError(
                f"recipe {recipe.name!r}: no node with compatible {', '.join(recipe.dt_compatibles)} in the live "
                f"device tree at {root}; refusing (only nodes present on the device are touched)"
            )
    out.targets.sort(key=lambda t: t.path)
    return out


def _quote(value: str) -> str:
    if any(c in value for c in '"\\\n'):
        raise OverlayError(f"refusing a DT string with quotes, backslashes or newlines: {value!r}")
    return f'"{value}"'


def render_dts(p: Plan) -> str:
    """Deterministic overlay source (same plan -> same bytes, so an unchanged overlay is not rewritten)."""
    lines = [
        "// Generated by edgeslim.jetson.dt_overlay -- do not edit; the carveouts role rewrites it.",
        f"// chip {p.chip}, module {p.module}, recipes: {', '.join(p.recipes)}",
        "/dts-v1/;",
        "/plugin/;",
        "",
        "/ {",
        f"\toverlay-name = {_quote(OVERLAY_NAME + ': ' + ', '.join(p.recipes))};",
    ]
    for i, t in enumerate(p.targets):
        lines += [
            "",
            f"\tfragment@{i} {{",
            f"\t\t// {t.recipe}: {t.compatible}",
            f"\t\ttarget-path = {_quote(t.path)};",
            "\t\t__overlay__ {",
            '\t\t\tstatus = "disabled";',
            "\t\t};",
            "\t};",
        ]
    lines += ["};", ""]
    return "\n".join(lines)


# ---- flattened device tree (DTB/DTBO) reader --------------------------------------------------------------------
FDT_MAGIC = 0xD00DFEED
_BEGIN, _END, _PROP, _NOP, _FEND = 1, 2, 3, 4, 9


@dataclass
class FdtNode:
    name: str
    props: dict[str, bytes] = field(default_factory=dict)
    children: dict[str, FdtNode] = field(default_factory=dict)


def parse_fdt(blob: bytes) -> FdtNode:
    """Parse a DTB (version >= 16) into nodes; raises OverlayError on anything malformed."""
    if len(blob) < 40:
        raise OverlayError("not a DTB: shorter than an FDT header")
    magic, total, off_struct, off_strings, _rsv, version, _lc, _cpu, size_strings, size_struct = struct.unpack(
        ">10I", blob[:40]
    )
    if magic != FDT_MAGIC:
        raise OverlayError(f"not a DTB: bad magic 0x{magic:08x}")
    if total != len(blob) or version < 16:
        raise OverlayError(f"truncated or unsupported DTB (size {len(blob)}, header says {total}, version {version})")
    strings = blob[off_strings : off_strings + size_strings]
    pos, end = off_struct, off_struct + size_struct
    stack: list[FdtNode] = []
    root: FdtNode | None = None
    try:
        while pos < end:
            (token,) = struct.unpack_from(">I", blob, pos)
            pos += 4
            if token == _BEGIN:
                stop = blob.index(b"\0", pos)
                node = FdtNode(blob[pos:stop].decode("ascii"))
                pos = (stop + 1 + 3) & ~3
                if stack:
                    stack[-1].children[node.name] = node
                elif root is None:
                    root = node
                else:
                    raise OverlayError("more than one root node")
                stack.append(node)
            elif token == _END:
                stack.pop()
            elif token == _PROP:
                length, nameoff = struct.unpack_from(">II", blob, pos)
                pos += 8
                name = strings[nameoff : strings.index(b"\0", nameoff)].decode("ascii")
                stack[-1].props[name] = blob[pos : pos + length]
                pos = (pos + length + 3) & ~3
            elif token == _NOP:
                continue
            elif token == _FEND:
                break
            else:
                raise OverlayError(f"not a DTB: unknown token {token} at offset {pos - 4}")
    except (IndexError, ValueError, struct.error, UnicodeDecodeError) as exc:
        if isinstance(exc, OverlayError):
            raise
        raise OverlayError(f"malformed DTB structure: {exc}") from None
    if root is None or stack:
        raise OverlayError("malformed DTB: no root node or unclosed nodes")
    return root


def overlay_targets(blob: bytes) -> dict[str, dict[str, str]]:
    """{target-path: {property: string value}} of a compiled overlay's fragments (string properties only)."""
    root = parse_fdt(blob)
    out: dict[str, dict[str, str]] = {}
    for name, frag in root.children.items():
        if name.startswith("__"):
            continue
        target = dt.string(frag.props.get("target-path"))
        body = frag.children.get("__overlay__")
        if target is None or body is None:
            raise OverlayError(f"fragment {name!r} has no target-path or no __overlay__ (not an edgeslim overlay)")
        if body.children:
            raise OverlayError(f"fragment {name!r} adds child nodes; an edgeslim overlay only sets status")
        out[target] = {k: dt.string(v) or "" for k, v in body.props.items()}
    return out


def verify_overlay(blob: bytes, p: Plan) -> None:
    """The compiled overlay sets exactly status = "disabled" on exactly the planned nodes."""
    got = overlay_targets(blob)
    want = {path: {"status": "disabled"} for path in p.paths}
    if got != want:
        extra = sorted(set(got) - set(want))
        missing = sorted(set(want) - set(got))
        raise OverlayError(
            "compiled overlay does not match the plan"
            + (f"; unexpected targets {extra}" if extra else "")
            + (f"; missing targets {missing}" if missing else "")
            + ("; a fragment sets more than status=disabled" if not extra and not missing else "")
        )


def _flatten(node: FdtNode, path: str = "") -> dict[str, dict[str, bytes]]:
    out = {path or "/": node.props}
    for name, child in node.children.items():
        out.update(_flatten(child, f"{path}/{name}"))
    return out


def verify_merged(base: bytes, merged: bytes, p: Plan) -> None:
    """A DTB merged from ``base`` and the planned overlay (fdtoverlay): the same nodes and properties as ``base``
    except ``status = "disabled"`` on exactly the planned nodes. Anything else -- another board's DTB, a node added or
    lost, a property changed -- is refused, so the boot entry never points at a DTB that differs in more than that."""
    before, after = _flatten(parse_fdt(base)), _flatten(parse_fdt(merged))
    if before.get("/", {}).get("compatible") != after.get("/", {}).get("compatible"):
        raise OverlayError("merged DTB is for another board (root compatible differs from the base FDT)")
    added, lost = sorted(set(after) - set(before)), sorted(set(before) - set(after))
    if added or lost:
        raise OverlayError(f"merged DTB differs from the base FDT in its nodes: added {added[:5]}, lost {lost[:5]}")
    missing = [path for path in p.paths if path not in after]
    if missing:
        raise OverlayError(f"the base FDT lacks planned nodes {missing}: it is not this board's kernel DTB")
    wrong = [path for path in p.paths if dt.string(after[path].get("status")) != "disabled"]
    if wrong:
        raise OverlayError(f"merged DTB does not disable {wrong}")
    planned = set(p.paths)
    changed = []
    for path, props in after.items():
        old = before[path]
        if path in planned:
            old, props = (
                {k: v for k, v in old.items() if k != "status"},
                {k: v for k, v in props.items() if k != "status"},
            )
        if old != props:
            changed.append(path)
    if changed:
        raise OverlayError(f"merged DTB changes more than the planned status properties, at {changed[:5]}")


def verify_overlaid(base: bytes, overlaid: bytes) -> None:
    """``base`` with the entry's own overlays applied (e.g. jetson-io's camera overlay), the base of a merged DTB: the
    same board and every node of ``base`` still there (an overlay adds or changes, it never removes nodes). What the
    overlays change is theirs, applied by fdtoverlay as L4TLauncher would at boot; it is not judged here."""
    before, after = _flatten(parse_fdt(base)), _flatten(parse_fdt(overlaid))
    if before.get("/", {}).get("compatible") != after.get("/", {}).get("compatible"):
        raise OverlayError("the FDT with the entry's overlays applied is for another board (root compatible differs)")
    lost = sorted(set(before) - set(after))
    if lost:
        raise OverlayError(f"the FDT with the entry's overlays applied lost nodes of the base FDT: {lost[:5]}")


def disabled_report(root: str, paths: list[str]) -> dict:
    """Post-reboot check: which of ``paths`` the live tree shows disabled, still enabled, or lacks."""
    report: dict[str, list[str]] = {"disabled": [], "enabled": [], "missing": []}
    for path in paths:
        status = node_status(root, path)
        key = "missing" if status is None else ("disabled" if status == "disabled" else "enabled")
        report[key].append(path)
    return report


# ---- boot files (the overlay, its source, a merged DTB) ------------------------------------------------------------
def read(path: str) -> bytes | None:
    """The file's bytes, None when it does not exist."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def install(path: str, data: bytes, replace: Callable[[str, str], None], mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically: a fsynced temporary file in its directory, renamed over it by
    ``replace`` (AnsibleModule.atomic_move), then the directory fsynced."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".edgeslim.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
    except BaseException:
        os.unlink(tmp)
        raise
    replace(tmp, path)
    fsync_dir(directory)


def confine(path: str, boot_root: str, what: str) -> None:
    """``path``'s real path (``..`` and symlinks resolved) must be inside ``boot_root``: boot files are written,
    removed and read there only, and directories created only there."""
    boot = os.path.realpath(boot_root)
    real = os.path.realpath(path)
    if real != boot and not real.startswith(boot.rstrip(os.sep) + os.sep):
        raise OverlayError(f"{what} {path} refused: it resolves to {real}, outside {boot_root}")


def present_files(dest: str, merged_dest: str | None = None) -> list[str]:
    """What V(absent) removes (edgeslim.jetson.dt_overlay, the engine's deadline restore): the overlay, its source
    (``<dest without .dtbo>.dts``) and the merged DTB, those that exist."""
    source = dest[: -len(".dtbo")] + ".dts" if dest.endswith(".dtbo") else None
    return [f for f in (dest, source, merged_dest) if f and os.path.exists(f)]


def remove_files(paths: list[str]) -> None:
    for path in paths:
        os.unlink(path)
