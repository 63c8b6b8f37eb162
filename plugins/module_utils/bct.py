# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Patch a BSP's MB1/MB2 BCT misc device-tree sources for validated carveout recipes (controller side).

The edit is one managed block appended to each misc DTS, between fixed markers, so it is idempotent, reviewable
in --diff and removable. MB1: an ``aux_info@CARVEOUT_X`` child with zero pref_base/size/alignment inside the
existing ``carveout`` node for every carveout of the recipes. MB2: each recipe cluster's ``auxp_controls@N`` with
enable_init/enable_fw_load/enable_unhalt = 0, and ``/delete-node/`` for every ``auxp_ast_config@M`` whose
``ast_region`` references one of those carveouts [SKILL-MEM].

Everything is checked the way the flashing tools read the files: preprocess with the C preprocessor
(``-x assembler-with-cpp -nostdinc -undef -D__DTS__``, the BSP's bct_flags idea) and compile with dtc. Refused
before any change: a carveout macro the BSP's headers do not define, a cluster whose auxp_controls index cannot be
found, a patched file that does not compile or whose compiled tree does not show the intended values.

Pure Python + the cpp/dtc executables; no Ansible imports.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ansible_collections.edgeslim.jetson.plugins.module_utils.carveout_recipes import Recipe

BEGIN = "/* BEGIN edgeslim.jetson carveouts (managed block; edit the profile, not this) */"
END = "/* END edgeslim.jetson carveouts */"
_BLOCK_RE = re.compile(r"\n?" + re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", re.S)
ZERO2 = "<0x0 0x0>"


class BctError(ValueError):
    """The BSP tree or a patched file is not what the recipe expects; nothing was changed."""


@dataclass
class Node:
    path: str
    props: dict[str, str] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)


def cpp_argv(src: Path, include_dirs: list[Path], extra: tuple[str, ...] = ()) -> list[str]:
    argv = ["cpp", "-nostdinc", "-undef", "-x", "assembler-with-cpp", "-D__DTS__", *extra]
    for inc in include_dirs:
        argv += ["-I", str(inc)]
    return [*argv, str(src)]


def _run(argv: list[str], stdin: str | None = None) -> str:
    res = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise BctError(f"{argv[0]} failed: {res.stderr.strip() or res.stdout.strip()}")
    return res.stdout


def defines(src: Path, include_dirs: list[Path]) -> dict[str, str]:
    """Every macro visible to ``src`` after its #includes (cpp -dM)."""
    out = _run(cpp_argv(src, include_dirs, ("-dM",)))
    macros = {}
    for line in out.splitlines():
        m = re.match(r"#define (\w+)(?:\s+(.*))?$", line)
        if m:
            macros[m.group(1)] = (m.group(2) or "").strip()
    return macros


def compile_tree(src: Path, include_dirs: list[Path]) -> Node:
    """Preprocess + compile as the flashing tools do, then read back dtc's normalised DTS."""
    pre = _run([*cpp_argv(src, include_dirs), "-P"])
    dts = _run(["dtc", "-q", "-I", "dts", "-O", "dts", "-"], stdin=pre)
    return parse_normalised(dts)


def parse_normalised(dts: str) -> Node:
    """Parse dtc's own output (one statement per line) into nodes with raw property values."""
    root = Node("/")
    stack = [root]
    for raw in dts.splitlines():
        line = raw.strip()
        if not line or line.startswith("/dts-v1/") or line.startswith("/memreserve/"):
            continue
        if line.endswith("{"):
            name = line[:-1].strip().split(":")[-1].strip()
            if name == "/":
                continue
            parent = stack[-1]
            node = Node(parent.path.rstrip("/") + "/" + name)
            parent.children.append(node)
            stack.append(node)
        elif line == "};":
            if len(stack) > 1:
                stack.pop()
        elif line.endswith(";"):
            body = line[:-1]
            key, value = [*body.split("=", 1), ""][:2]
            stack[-1].props[key.strip()] = value.strip()
    return root


def walk(node: Node):
    yield node
    for child in node.children:
        yield from walk(child)


def basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _cells(value: str) -> list[int]:
    return [int(x, 0) for x in re.findall(r"0x[0-9a-fA-F]+|\d+", value)]


def _nested(path: str, body: list[str]) -> list[str]:
    """Emit ``/ { a { b { <body> }; }; };`` for a node path, so the block merges into the existing node."""
    parts = [p for p in path.split("/") if p]
    lines = ["/ {"]
    for depth, part in enumerate(parts, start=1):
        lines.append("\t" * depth + f"{part} {{")
    lines += ["\t" * (len(parts) + 1) + b for b in body]
    for depth in range(len(parts), 0, -1):
        lines.append("\t" * depth + "};")
    lines.append("};")
    return lines


def strip_block(text: str) -> str:
    return _BLOCK_RE.sub("\n", text).rstrip("\n") + "\n"


def with_block(text: str, block: list[str], recipes: list[Recipe]) -> str:
    base = strip_block(text)
    if not block:
        return base
    header = f"/* recipes: {', '.join(r.name for r in recipes)} */"
    return base + "\n" + "\n".join([BEGIN, header, *block, END]) + "\n"


def _source_tree(src: Path, include_dirs: list[Path], seen: set[Path] | None = None) -> str:
    """Raw text of ``src`` and everything it #includes (comments kept: they name the auxp clusters)."""
    seen = seen if seen is not None else set()
    if src in seen or not src.exists():
        return ""
    seen.add(src)
    text = src.read_text()
    out = [text]
    for inc in re.findall(r'#include\s+[<"]([^">]+)[">]', text):
        for d in [src.parent, *include_dirs]:
            cand = (d / inc).resolve()
            if cand.exists():
                out.append(_source_tree(cand, include_dirs, seen))
                break
    return "\n".join(out)


def cluster_indices(raw: str, clusters: tuple[str, ...]) -> dict[str, list[int]]:
    """``auxp_controls@N`` nodes carry a comment naming their cluster (on the node line or the line above)."""
    lines = raw.splitlines()
    found: dict[str, list[int]] = {c: [] for c in clusters}
    for i, line in enumerate(lines):
        m = re.search(r"auxp_controls@(\w+)\s*\{", line)
        if not m:
            continue
        comment = " ".join([lines[i - 1] if i else "", line])
        for cluster in clusters:
            if re.search(rf"(/\*|//).*\b{re.escape(cluster)}\d*\b", comment, re.I):
                found[cluster].append(int(m.group(1), 0))
    return found


@dataclass
class Plan:
    mb1_text: str
    mb2_text: str
    carveouts: dict[str, int]
    auxp_disabled: list[int]
    ast_deleted: list[int]
    aliases: dict[str, list[str]] = field(default_factory=dict)


_NUMBER_RE = re.compile(r"(0x[0-9a-fA-F]+|[0-9]+)[uUlL]*")
_NAME_RE = re.compile(r"[A-Za-z_]\w*")


def resolve_carveout(name: str, macros: dict[str, str]) -> tuple[int, list[str]]:
    """The numeric ID of carveout macro ``name``, following aliases (``#define A B``); also the chain of names.

    Headers define IDs as numbers (``20``, ``0x14``, ``20U``, ``(20)``) or as another carveout's name. Anything else
    (an expression, a cycle, a name the headers do not define) is refused: we would not know which carveout it is.
    """
    chain = [name]
    while True:
        value = macros[chain[-1]].strip()
        while value.startswith("(") and value.endswith(")"):
            value = value[1:-1].strip()
        number = _NUMBER_RE.fullmatch(value)
        if number:
            return int(number.group(1), 0), chain
        if not _NAME_RE.fullmatch(value):
            raise BctError(
                f"{name}: {chain[-1]} is defined as {macros[chain[-1]]!r}, neither a carveout ID number nor another "
                "carveout's name -- refusing"
            )
        if value in chain:
            raise BctError(f"{name}: alias cycle {' -> '.join([*chain, value])} in the BSP's headers -- refusing")
        if value not in macros:
            raise BctError(
                f"{name} is an alias of {value} ({' -> '.join([*chain, value])}), which the BSP's headers do not "
                "define -- refusing"
            )
        chain.append(value)


def plan(mb1: Path, mb2: Path, recipes: list[Recipe], include_dirs: list[Path]) -> Plan:
    for f in (mb1, mb2):
        if not f.is_file():
            raise BctError(f"BSP file missing: {f}")
    carveouts = [c for r in recipes for c in r.mb1_carveouts]
    clusters = tuple(dict.fromkeys(c for r in recipes for c in r.mb2_clusters))

    macros = defines(mb1, include_dirs)
    missing = [c for c in carveouts if c not in macros]
    if missing:
        raise BctError(
            f"the BSP's headers for {mb1.name} do not define {', '.join(missing)}; this BSP does not match the "
            "validated recipe (check the carveout names against its BCT header) -- refusing"
        )
    resolved = {c: resolve_carveout(c, macros) for c in carveouts}
    numbers = {c: num_chain[0] for c, num_chain in resolved.items()}
    canonical = {c: num_chain[1][-1] for c, num_chain in resolved.items()}
    # A header may name one carveout twice: EDK2's T234 header has ``#define CARVEOUT_DISP_EARLY_BOOT_FB
    # CARVEOUT_CCPLEX_SMMU_PTW`` [EDK2-T234-CARVEOUTS]. Names that resolve to the same number-defined macro are that
    # one carveout (reported as aliases); a different name that merely has the same number is refused, since zeroing
    # one would silently zero a carveout outside the recipe.
    aliases: dict[str, list[str]] = {c: [] for c in carveouts}
    collisions: dict[str, list[str]] = {}
    for name in sorted(macros):
        if not name.startswith("CARVEOUT_") or name in numbers:
            continue
        try:
            num, chain = resolve_carveout(name, macros)
        except BctError:
            continue  # not a carveout ID (or broken) and not used by the recipe
        for c in carveouts:
            if chain[-1] == canonical[c]:
                aliases[c].append(name)
            elif num == numbers[c]:
                collisions.setdefault(c, []).append(name)
    if collisions:
        detail = ", ".join(f"{c} = {'/'.join(v)} ({numbers[c]})" for c, v in collisions.items())
        raise BctError(
            f"{mb1.name}: recipe carveouts share an ID with carveouts outside the recipe: {detail} -- refusing"
        )

    # Plan from the stock files (our own managed block stripped), so a re-run computes the same block.
    tree1 = compile_text(mb1, strip_block(mb1.read_text()), include_dirs)
    carveout_nodes = [n for n in walk(tree1) if basename(n.path) == "carveout"]
    if len(carveout_nodes) != 1:
        raise BctError(f"{mb1.name}: expected one 'carveout' node, found {len(carveout_nodes)}")
    zero = ["pref_base = <0x0 0x0>;", "size = <0x0 0x0>;", "alignment = <0x0 0x0>;"]
    body1: list[str] = []
    emitted: set[int] = set()
    for c in carveouts:
        if numbers[c] in emitted:
            continue  # two recipe names for one carveout: a second aux_info@<same id> would be a duplicate node
        emitted.add(numbers[c])
        body1 += [f"aux_info@{c} {{", *("\t" + z for z in zero), "};"]
    mb1_text = with_block(mb1.read_text(), _nested(carveout_nodes[0].path, body1), recipes)

    raw2 = strip_block(_source_tree(mb2, include_dirs))
    idx = cluster_indices(raw2, clusters)
    unknown = [c for c, v in idx.items() if not v]
    if unknown:
        raise BctError(f"{mb2.name}: no auxp_controls node is marked as cluster {', '.join(unknown)} -- refusing")
    tree2 = compile_text(mb2, strip_block(mb2.read_text()), include_dirs)
    controls = {int(basename(n.path).split("@")[1], 0): n for n in walk(tree2) if "auxp_controls@" in n.path}
    asts = [n for n in walk(tree2) if basename(n.path).startswith("auxp_ast_config@")]
    want = set(numbers.values())
    ast_delete = sorted(
        int(basename(a.path).split("@")[1], 0)
        for a in asts
        if any(set(_cells(r.props.get("carveout", ""))) & want for r in walk(a))
    )
    auxp = sorted({i for v in idx.values() for i in v})
    for i in auxp:
        if i not in controls:
            raise BctError(f"{mb2.name}: auxp_controls@{i} is named in a comment but not in the compiled tree")
    parent = controls[auxp[0]].path.rsplit("/", 1)[0] or "/"
    body2: list[str] = []
    for i in auxp:
        body2 += [f"auxp_controls@{i} {{", "\tenable_init = <0>;", "\tenable_fw_load = <0>;", "\tenable_unhalt = <0>;",
                  "};"]  # fmt: skip
    body2 += [f"/delete-node/ auxp_ast_config@{i};" for i in ast_delete]
    mb2_text = with_block(mb2.read_text(), _nested(parent, body2), recipes)
    return Plan(mb1_text, mb2_text, numbers, auxp, ast_delete, {c: v for c, v in aliases.items() if v})


def compile_text(path: Path, text: str, include_dirs: list[Path]) -> Node:
    """Compile ``text`` as if it were ``path`` (same directory, so relative #includes resolve)."""
    fd, tmp = tempfile.mkstemp(prefix=".edgeslim-check-", suffix=".dts", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        return compile_tree(Path(tmp), include_dirs)
    finally:
        os.unlink(tmp)


def check_patched(path: Path, text: str, include_dirs: list[Path], verify) -> None:
    verify(compile_text(path, text, include_dirs))


def verify_mb1(carveouts: dict[str, int]):
    def _verify(tree: Node) -> None:
        # cpp leaves the header's spelling in the unit address (aux_info@39, aux_info@0x27, aux_info@39U)
        nodes = {re.sub(r"[uUlL]+$", "", basename(n.path)): n for n in walk(tree)}
        for name, num in carveouts.items():
            node = next(
                (nodes[k] for k in (f"aux_info@{num}", f"aux_info@{num:x}", f"aux_info@0x{num:x}") if k in nodes), None
            )
            if node is None or any(_cells(node.props.get(k, "<1>")) != [0, 0] for k in ("size", "pref_base")):
                raise BctError(f"compiled MB1 tree does not zero {name} (aux_info@{num})")

    return _verify


def verify_mb2(auxp: list[int], ast_deleted: list[int]):
    def _verify(tree: Node) -> None:
        names = {basename(n.path): n for n in walk(tree)}
        for i in auxp:
            node = names.get(f"auxp_controls@{i}")
            if node is None or any(_cells(node.props.get(k, "<1>")) != [0] for k in
                                   ("enable_init", "enable_fw_load", "enable_unhalt")):  # fmt: skip
                raise BctError(f"compiled MB2 tree still enables auxp_controls@{i}")
        for i in ast_deleted:
            if f"auxp_ast_config@{i}" in names:
                raise BctError(f"compiled MB2 tree still has auxp_ast_config@{i}")

    return _verify
