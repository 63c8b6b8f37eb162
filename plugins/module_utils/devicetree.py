# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read a device tree in the layout the kernel exposes (/sys/firmware/devicetree/base = /proc/device-tree).

One directory per node, one file per property holding its raw big-endian bytes, a ``name`` file per node. Cells are
32-bit big-endian; ``reg`` of a child is ``#address-cells`` + ``#size-cells`` of its parent (defaults 2 and 1 per
the DT spec when absent). Pure Python.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field


class DeviceTreeError(ValueError):
    pass


def read_prop(node: str, name: str) -> bytes | None:
    try:
        with open(os.path.join(node, name), "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def strings(raw: bytes | None) -> list[str]:
    """A string or string list (NUL-separated, NUL-terminated)."""
    if not raw:
        return []
    return [s.decode("utf-8", "replace") for s in raw.rstrip(b"\0").split(b"\0")]


def string(raw: bytes | None) -> str | None:
    values = strings(raw)
    return values[0] if values else None


def cells(raw: bytes | None, where: str = "property") -> list[int]:
    if raw is None:
        return []
    if len(raw) % 4:
        raise DeviceTreeError(f"{where}: {len(raw)} bytes is not a whole number of 32-bit cells")
    return list(struct.unpack(f">{len(raw) // 4}I", raw))


def combine(values: list[int]) -> int:
    """Join big-endian cells (most significant first) into one integer."""
    out = 0
    for v in values:
        out = (out << 32) | v
    return out


def compatible_of(root: str) -> list[str]:
    return strings(read_prop(root, "compatible"))


def model_of(root: str) -> str | None:
    return string(read_prop(root, "model"))


def walk_nodes(root: str):
    for dirpath, dirnames, _files in os.walk(root):
        dirnames.sort()
        yield dirpath


def find_compatible(root: str, compatibles: list[str]) -> list[str]:
    """Node paths (relative to root, '/'-rooted) whose compatible list contains any of ``compatibles``."""
    want = set(compatibles)
    found = []
    for node in walk_nodes(root):
        if want & set(strings(read_prop(node, "compatible"))):
            rel = os.path.relpath(node, root)
            found.append("/" if rel == "." else "/" + rel.replace(os.sep, "/"))
    return found


@dataclass
class Carveout:
    name: str
    size: int | None
    base: int | None
    no_map: bool
    reusable: bool
    status: str
    compatible: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "size_bytes": self.size,
            "size_mib": None if self.size is None else round(self.size / 1048576, 2),
            "base": None if self.base is None else f"0x{self.base:x}",
            "no_map": self.no_map,
            "reusable": self.reusable,
            "status": self.status,
            "compatible": self.compatible,
        }


def no_map_cost_bytes(size: int) -> int:
    """What a no-map reserved-memory region of ``size`` bytes takes off MemTotal: S - S/512. The linear map is
    page-granular, so the hole also saves its page tables, S/4096 x 8 B (measured to the kB on the emulated arm64
    boot, kernel 6.1: docs/emulated-boot.md)."""
    return size - size // 512


def reserved_memory(root: str) -> list[Carveout]:
    """Children of /reserved-memory with size from ``size`` (dynamic) or ``reg`` (static)."""
    rm = os.path.join(root, "reserved-memory")
    if not os.path.isdir(rm):
        return []
    acells = cells(read_prop(rm, "#address-cells"), "reserved-memory/#address-cells") or [2]
    scells = cells(read_prop(rm, "#size-cells"), "reserved-memory/#size-cells") or [1]
    na, ns = acells[0], scells[0]
    out = []
    for entry in sorted(os.listdir(rm)):
        node = os.path.join(rm, entry)
        if not os.path.isdir(node):
            continue
        where = f"reserved-memory/{entry}"
        size = base = None
        reg = cells(read_prop(node, "reg"), f"{where}/reg")
        if reg:
            if len(reg) < na + ns:
                raise DeviceTreeError(f"{where}/reg: {len(reg)} cells, expected {na} address + {ns} size")
            base, size = combine(reg[:na]), combine(reg[na : na + ns])
        else:
            raw = cells(read_prop(node, "size"), f"{where}/size")
            if raw:
                if len(raw) != ns:
                    raise DeviceTreeError(f"{where}/size: {len(raw)} cells, expected #size-cells = {ns}")
                size = combine(raw)
        out.append(
            Carveout(
                name=entry,
                size=size,
                base=base,
                no_map=read_prop(node, "no-map") is not None,
                reusable=read_prop(node, "reusable") is not None,
                status=string(read_prop(node, "status")) or "okay",
                compatible=strings(read_prop(node, "compatible")),
            )
        )
    return out
