"""Unpack a flattened device tree (DTB) into the layout the kernel exposes at /sys/firmware/devicetree/base.

One directory per node, one file per property holding its raw (big-endian) bytes, and a ``name`` file per node
(the node name without its unit address, NUL-terminated), as the kernel synthesises it. dtc reads this layout
(``dtc -I fs``) but cannot write it, hence this converter. Stdlib only.

    python3 dtb2fs.py board.dtb OUTDIR
"""

from __future__ import annotations

import os
import shutil
import struct
import sys
from pathlib import Path

FDT_MAGIC = 0xD00DFEED
FDT_BEGIN_NODE, FDT_END_NODE, FDT_PROP, FDT_NOP, FDT_END = 1, 2, 3, 4, 9


class DtbError(ValueError):
    pass


def _cstr(buf: bytes, off: int) -> tuple[str, int]:
    end = buf.index(b"\0", off)
    return buf[off:end].decode("ascii"), end + 1


def _align4(n: int) -> int:
    return (n + 3) & ~3


def unpack(dtb: bytes, out: Path) -> int:
    """Write the tree under ``out`` (created, must not exist). Returns the number of nodes written."""
    if len(dtb) < 40:
        raise DtbError("file too short for an FDT header")
    magic, totalsize, off_struct, off_strings, _rsv, version, _lc, _cpu, size_strings, size_struct = struct.unpack(
        ">10I", dtb[:40]
    )
    if magic != FDT_MAGIC:
        raise DtbError(f"bad magic 0x{magic:08x} (not a DTB)")
    if totalsize > len(dtb) or version < 17:
        raise DtbError(f"truncated or unsupported DTB (size {len(dtb)}/{totalsize}, version {version})")
    strings = dtb[off_strings : off_strings + size_strings]
    pos, end = off_struct, off_struct + size_struct
    stack: list[Path] = []
    nodes = 0
    while pos < end:
        (token,) = struct.unpack_from(">I", dtb, pos)
        pos += 4
        if token == FDT_BEGIN_NODE:
            name, nxt = _cstr(dtb, pos)
            pos = _align4(nxt)
            path = out if not stack else stack[-1] / name
            path.mkdir(parents=not stack)
            # The kernel adds a "name" property: the node name up to '@' (empty for the root).
            (path / "name").write_bytes(name.split("@", 1)[0].encode() + b"\0")
            stack.append(path)
            nodes += 1
        elif token == FDT_END_NODE:
            if not stack:
                raise DtbError("unbalanced END_NODE")
            stack.pop()
        elif token == FDT_PROP:
            length, nameoff = struct.unpack_from(">II", dtb, pos)
            pos += 8
            pname = _cstr(strings, nameoff)[0]
            if not stack:
                raise DtbError("property outside any node")
            if pname != "name":
                (stack[-1] / pname).write_bytes(dtb[pos : pos + length])
            pos = _align4(pos + length)
        elif token == FDT_NOP:
            continue
        elif token == FDT_END:
            break
        else:
            raise DtbError(f"unknown token {token} at offset {pos - 4}")
    if stack:
        raise DtbError("truncated structure block (unclosed nodes)")
    return nodes


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    src, dst = Path(argv[1]), Path(argv[2])
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        n = unpack(src.read_bytes(), tmp)
    except (OSError, DtbError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"dtb2fs: {src}: {exc}", file=sys.stderr)
        return 1
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)
    print(f"dtb2fs: {n} nodes -> {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
