"""The fault sweep: run an operation once cleanly to count its write primitives (k), then once per injection point
N = 1..k with the power cut before call N, and check the invariants on what the disk holds after each cut
(powercut.py). An ``Op`` knows its initial state (``reset``), how to run (``run``) and what must hold after a cut
(``check``: a list of violations, empty when the state is safe)."""

from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MODULE_TESTS = HERE.parent / "plugins" / "modules"
if str(MODULE_TESTS) not in sys.path:
    sys.path.insert(0, str(MODULE_TESTS))

from powercut import PowerCut, PowerLoss

TEMP_PREFIXES = (".extlinux.", ".edgeslim.", ".journal.")  # the temporary files of the atomic writes


class Op:
    """``name`` and ``roots`` (the directories whose writes are counted) are set by each operation."""

    name: str
    roots: list[str]

    def reset(self) -> None:
        raise NotImplementedError

    def run(self, cut: PowerCut) -> None:
        raise NotImplementedError

    def check(self, clean: Any) -> list[str]:
        raise NotImplementedError

    def final(self) -> Any:
        """What a clean run leaves (passed to ``check``)."""
        raise NotImplementedError


class Sweep:
    def __init__(self, op: Op) -> None:
        self.op = op
        self.k = 0
        self.counts: dict[str, int] = {}
        self.calls: list[str] = []
        self.violations: dict[int, list[str]] = {}
        self.leftovers: dict[int, list[str]] = {}

    def summary(self) -> str:
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self.counts.items()))
        bad = sum(1 for v in self.violations.values() if v)
        left = sum(1 for v in self.leftovers.values() if v)
        return f"{self.op.name}: {self.k} injection points ({kinds}); violations at {bad}; temp files left at {left}"

    def report(self) -> str:
        lines = [self.summary()]
        for n, found in sorted(self.violations.items()):
            for v in found:
                lines.append(f"  cut before call {n} ({self.calls[n - 1]}): {v}")
        return "\n".join(lines)


def sweep(op: Op, stop_at_first: bool = False) -> Sweep:
    result = Sweep(op)
    op.reset()
    with PowerCut(op.roots) as cut:
        op.run(cut)
    result.k, result.counts, result.calls = len(cut.calls), cut.counts(), list(cut.calls)
    assert result.k > 0, f"{op.name}: a clean run made no write under {op.roots}"
    clean = op.final()
    for n in range(1, result.k + 1):
        op.reset()
        with PowerCut(op.roots, at=n) as cut:
            try:
                op.run(cut)
            except PowerLoss:
                pass
            else:
                raise AssertionError(f"{op.name}: the run ended without reaching call {n}: {result.calls[n - 1]}")
            # The cleanups that ran after the cut wrote nothing (the machine was off); now the disk settles.
        cut.settle()
        result.leftovers[n] = temp_files(op.roots)
        result.violations[n] = op.check(clean)
        if stop_at_first and result.violations[n]:
            break
    return result


def temp_files(roots: list[str]) -> list[str]:
    found = []
    for root in roots:
        for directory, _dirs, files in os.walk(root):
            found.extend(os.path.join(directory, f) for f in files if f.startswith(TEMP_PREFIXES))
    return sorted(found)


# ---- file trees ---------------------------------------------------------------------------------------------------
def fs_snapshot(root: str) -> dict[str, tuple[Any, ...]]:
    """Every directory, file (mode, bytes) and symlink under ``root``, by relative path."""
    out: dict[str, tuple[Any, ...]] = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", stat.S_IMODE(st.st_mode))
            else:
                with open(path, "rb") as handle:
                    out[rel] = ("f", stat.S_IMODE(st.st_mode), handle.read())
    return out


def fs_restore(root: str, snap: dict[str, tuple[Any, ...]]) -> None:
    shutil.rmtree(root)
    os.makedirs(root)
    for rel in sorted(snap, key=lambda r: r.count(os.sep)):
        kind = snap[rel]
        path = os.path.join(root, rel)
        if kind[0] == "d":
            os.makedirs(path, exist_ok=True)
            os.chmod(path, kind[1])
    for rel, kind in sorted(snap.items()):
        path = os.path.join(root, rel)
        if kind[0] == "l":
            os.symlink(kind[1], path)
        elif kind[0] == "f":
            with open(path, "wb") as handle:
                handle.write(kind[2])
            os.chmod(path, kind[1])


def file_changes(
    before: dict[str, tuple[Any, ...]], after: dict[str, tuple[Any, ...]], under: str = "", modes: bool = True
) -> list[str]:
    """Files (not directories) added, removed or changed under the relative path ``under``, leaving out the temporary
    files of a cut write (``temp_files`` reports those); ``modes=False`` compares the bytes only."""

    def files(snap: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
        kept = {r: v for r, v in snap.items() if v[0] != "d" and r.startswith(under)}
        return {r: (v if modes or v[0] != "f" else v[2]) for r, v in kept.items()
                if not os.path.basename(r).startswith(TEMP_PREFIXES)}  # fmt: skip

    b, a = files(before), files(after)
    return sorted(r for r in set(b) | set(a) if b.get(r) != a.get(r))
