# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""extlinux.conf as NVIDIA's UEFI L4TLauncher reads it: a lossless line model with targeted edits.

Grammar ([EDK2 L4TLauncher] ``ProcessExtLinuxConfig``; [OE4T extlinux.conf-support.md]): keys TIMEOUT, DEFAULT,
MENU TITLE,
LABEL, MENU LABEL, LINUX, INITRD, FDT, APPEND, OVERLAYS, matched as prefixes of the trimmed line, case-sensitive;
``#`` anywhere starts a comment (the rest of the line is dropped, so a value can never contain ``#``); at most 10
LABEL entries are read; DEFAULT names a label, and when it is unset or unknown the first entry boots. KERNEL and
FDTDIR are not supported by L4TLauncher and are refused here rather than silently ignored.

Every line is kept as it was (including comments, blank lines, indentation and CRLF endings); an edit rewrites or
inserts only the lines it must, so an unchanged file round-trips byte-identical. Pure Python.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

KEYS = ("MENU LABEL", "MENU TITLE", "TIMEOUT", "DEFAULT", "LABEL", "LINUX", "INITRD", "FDT", "APPEND", "OVERLAYS")
GLOBAL_KEYS = ("TIMEOUT", "DEFAULT", "MENU TITLE")
ENTRY_KEYS = ("MENU LABEL", "LINUX", "INITRD", "FDT", "APPEND", "OVERLAYS")
UNSUPPORTED = ("KERNEL", "FDTDIR")
MAX_ENTRIES = 10  # L4TLauncher ignores entries past the tenth
_EOL = re.compile(r"(\r\n|\n|\r)$")


class ExtlinuxError(ValueError):
    """The file cannot be read or edited safely; nothing is written."""


@dataclass
class Line:
    text: str  # without the line ending
    eol: str
    key: str | None = None
    value: str | None = None

    @property
    def raw(self) -> str:
        return self.text + self.eol


def _classify(text: str) -> tuple[str | None, str | None]:
    code = text.split("#", 1)[0].strip()
    if not code:
        return None, None
    if code.split()[0] in UNSUPPORTED:  # FDTDIR would otherwise prefix-match FDT
        return "?", code
    for key in KEYS:
        if code.startswith(key):
            return key, code[len(key) :].strip()
    return "?", code


@dataclass
class Entry:
    label: str
    start: int  # index of the LABEL line
    end: int  # index one past the entry's last key line
    keys: dict[str, int] = field(default_factory=dict)  # key -> line index (last occurrence wins)


class ExtlinuxConfig:
    def __init__(self, text: str, source: str = "extlinux.conf") -> None:
        self.source = source
        self.lines: list[Line] = []
        for piece in text.splitlines(keepends=True):
            m = _EOL.search(piece)
            eol = m.group(1) if m else ""
            body = piece[: len(piece) - len(eol)]
            key, value = _classify(body)
            self.lines.append(Line(body, eol, key, value))
        self._index()

    # ---- reading -------------------------------------------------------------------------------------------
    def _index(self) -> None:
        self.entries: list[Entry] = []
        self.globals: dict[str, int] = {}
        for i, line in enumerate(self.lines):
            if line.key is None:
                continue
            if line.key == "?":
                word = (line.value or "").split()[0]
                if word in UNSUPPORTED:
                    raise ExtlinuxError(f"{self.source}:{i + 1}: {word} is not supported by L4TLauncher")
                raise ExtlinuxError(f"{self.source}:{i + 1}: unknown directive {line.value[:40]!r}")
            if line.key == "LABEL":
                if not line.value:
                    raise ExtlinuxError(f"{self.source}:{i + 1}: LABEL without a name")
                if any(e.label == line.value for e in self.entries):
                    raise ExtlinuxError(f"{self.source}:{i + 1}: duplicate LABEL {line.value!r}")
                self.entries.append(Entry(line.value, i, i + 1))
            elif line.key in GLOBAL_KEYS:
                self.globals[line.key] = i
            elif not self.entries:
                raise ExtlinuxError(f"{self.source}:{i + 1}: {line.key} before any LABEL")
            else:
                self.entries[-1].keys[line.key] = i
                self.entries[-1].end = i + 1
        if not self.entries:
            raise ExtlinuxError(f"{self.source}: no LABEL entry")
        for e in self.entries[:MAX_ENTRIES]:
            if "LINUX" not in e.keys:
                raise ExtlinuxError(f"{self.source}: entry {e.label!r} has no LINUX line")

    def render(self) -> str:
        return "".join(line.raw for line in self.lines)

    def value(self, index: int | None) -> str | None:
        return None if index is None else self.lines[index].value

    @property
    def default_label(self) -> str | None:
        return self.value(self.globals.get("DEFAULT"))

    @property
    def timeout(self) -> int | None:
        raw = self.value(self.globals.get("TIMEOUT"))
        return int(raw) if raw and raw.isdigit() else None

    def entry(self, label: str) -> Entry | None:
        return next((e for e in self.entries[:MAX_ENTRIES] if e.label == label), None)

    def default_entry(self) -> Entry:
        """What L4TLauncher boots: the DEFAULT label if it names a readable entry, else the first."""
        return self.entry(self.default_label or "") or self.entries[0]

    def get(self, entry: Entry, key: str) -> str | None:
        return self.value(entry.keys.get(key))

    def summary(self) -> dict:
        def one(e: Entry) -> dict:
            return {
                "label": e.label,
                "menu_label": self.get(e, "MENU LABEL"),
                "linux": self.get(e, "LINUX"),
                "initrd": self.get(e, "INITRD"),
                "fdt": self.get(e, "FDT"),
                "append": self.get(e, "APPEND"),
                "overlays": split_overlays(self.get(e, "OVERLAYS")),
            }

        return {
            "default_label": self.default_label,
            "default_found": self.entry(self.default_label or "") is not None,
            "timeout": self.timeout,
            "labels": [e.label for e in self.entries[:MAX_ENTRIES]],
            "entries": [one(e) for e in self.entries[:MAX_ENTRIES]],
            "ignored_entries": [e.label for e in self.entries[MAX_ENTRIES:]],
            "boot_label": self.default_entry().label,
            "boot_entry": one(self.default_entry()),
        }

    # ---- editing -------------------------------------------------------------------------------------------
    def _indent_of(self, entry: Entry) -> str:
        for idx in sorted(entry.keys.values()):
            text = self.lines[idx].text
            return text[: len(text) - len(text.lstrip())]
        return "      "

    def _eol(self) -> str:
        return self.lines[0].eol or "\n" if self.lines else "\n"

    def _insert(self, at: int, lines: list[Line]) -> None:
        """Insert whole lines at ``at``; a last line without its newline gets one first, so the new line is not
        glued onto it (e.g. ``FDT`` after an APPEND that ended the file)."""
        if at > 0 and not self.lines[at - 1].eol:
            prev = self.lines[at - 1]
            self.lines[at - 1] = Line(prev.text, self._eol(), prev.key, prev.value)
            if at == len(self.lines):
                # The file ended without a newline: so does the new last line (a removal then restores it exactly).
                lines = [*lines[:-1], Line(lines[-1].text, "", lines[-1].key, lines[-1].value)]
        self.lines[at:at] = lines

    def _delete(self, start: int, end: int) -> None:
        """Delete lines [start, end); when they ended a file without a final newline, the new last line loses its
        newline too, so an insert followed by its removal gives back the same bytes."""
        unterminated = end >= len(self.lines) and not self.lines[-1].eol
        del self.lines[start:end]
        if unterminated and self.lines and start == len(self.lines):
            last = self.lines[-1]
            self.lines[-1] = Line(last.text, "", last.key, last.value)

    def _set_line(self, index: int, key: str, value: str) -> None:
        line = self.lines[index]
        indent = line.text[: len(line.text) - len(line.text.lstrip())]
        comment = line.text[len(line.text.split("#", 1)[0]) :]
        if comment and not comment.startswith(" "):
            comment = " " + comment
        self.lines[index] = Line(f"{indent}{key} {value}{comment}", line.eol or self._eol(), key, value)

    def set_global(self, key: str, value: str) -> bool:
        check_value(value)
        if key in self.globals:
            if self.value(self.globals[key]) == value:
                return False
            self._set_line(self.globals[key], key, value)
        else:
            at = self.globals.get("TIMEOUT", -1) + 1
            self._insert(at, [Line(f"{key} {value}", self._eol(), key, value)])
        self._index()
        return True

    def remove_global(self, key: str) -> bool:
        if key not in self.globals:
            return False
        self._delete(self.globals[key], self.globals[key] + 1)
        self._index()
        return True

    def set_key(self, label: str, key: str, value: str | None) -> bool:
        """Set (or with None remove) an entry key; returns whether the text changed."""
        entry = self.require(label)
        if key not in ENTRY_KEYS:
            raise ExtlinuxError(f"{key} is not an entry key")
        index = entry.keys.get(key)
        if value is None:
            if index is None:
                return False
            self._delete(index, index + 1)
        else:
            check_value(value)
            if index is not None:
                if self.value(index) == value:
                    return False
                self._set_line(index, key, value)
            else:
                self._insert(entry.end, [Line(f"{self._indent_of(entry)}{key} {value}", self._eol(), key, value)])
        self._index()
        return True

    def clone_entry(self, source: str, label: str, menu_label: str | None = None) -> bool:
        """Create ``label`` as a copy of ``source``'s lines, placed before it (the source stays as the fallback)."""
        check_value(label)
        if self.entry(label):
            return False
        if len(self.entries) >= MAX_ENTRIES:
            raise ExtlinuxError(f"{self.source}: already {len(self.entries)} entries; L4TLauncher reads only "
                                f"{MAX_ENTRIES}, a new one would not be bootable")  # fmt: skip
        src = self.require(source)
        block = [Line(ln.text, ln.eol or self._eol(), ln.key, ln.value) for ln in self.lines[src.start : src.end]]
        indent = block[0].text[: len(block[0].text) - len(block[0].text.lstrip())]
        block[0] = Line(f"{indent}LABEL {label}", block[0].eol, "LABEL", label)
        blank = Line("", self._eol())
        self._insert(src.start, [*block, blank])
        self._index()
        if menu_label is not None:
            self.set_key(label, "MENU LABEL", menu_label)
        return True

    def remove_entry(self, label: str) -> bool:
        entry = self.entry(label)
        if entry is None:
            return False
        end = entry.end
        if end < len(self.lines) and not self.lines[end].text.strip():
            end += 1  # the blank separator clone_entry added
        self._delete(entry.start, end)
        self._index()
        return True

    def require(self, label: str) -> Entry:
        entry = self.entry(label)
        if entry is None:
            raise ExtlinuxError(f"{self.source}: no entry labelled {label!r} (have: {[e.label for e in self.entries]})")
        return entry


def check_value(value: str) -> None:
    if "#" in value or "\n" in value or "\r" in value:
        raise ExtlinuxError(f"refusing to write {value!r}: L4TLauncher cuts a line at '#', and values are one line")


def split_overlays(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def merge_overlays(existing: list[str], ours: list[str]) -> list[str]:
    """OVERLAYS keeping every overlay already in the entry (in order, first occurrence) with ``ours`` appended last.

    L4TLauncher applies the comma-separated list in order on top of FDT (EDK2 L4TLauncher, r36.2+), so an overlay
    another tool put there (e.g. jetson-io's camera overlay) must stay; ours goes last so that it wins. A list that
    already ends with ``ours`` comes back unchanged; one that has ours elsewhere gets it moved to the end."""
    out: list[str] = []
    for path in existing:
        if path not in ours and path not in out:
            out.append(path)
    return out + [path for i, path in enumerate(ours) if path not in ours[:i]]


# ---- kernel command line ---------------------------------------------------------------------------------------
# What the kernel's parser takes as one parameter [KERNEL-CMDLINE]: a name up to '=' and a value up to the next
# whitespace outside double quotes; '--' ends the kernel's part (the rest goes to init). Names are letters, digits,
# '_', '-' and '.' (module.param); '-' and '_' are the same to the kernel.
_ARG_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
# Which boot the device makes: changing these from a playbook can leave it unbootable, or booting another system.
PROTECTED_ARGS = ("root", "init", "rdinit", "nfsroot")
# swiotlb=<slots>[,<nareas>][,force]: decimal only, as the kernel reads the count with base 0 (010 is octal 8).
SWIOTLB_SLOT_BYTES = 2048
SWIOTLB_MAX_SLOTS = 524288  # 1 GiB of pool, from low memory at boot [KERNEL]; docs/reliability.md
_SWIOTLB = re.compile(r"([1-9][0-9]*)(,[1-9][0-9]*)?(,force)?\Z")


def _bad_char(value: str) -> str | None:
    """The first character that would end or split a kernel argument, or hide a line break."""
    for ch in value:
        if ch.isspace() or ch == '"' or unicodedata.category(ch) in ("Cc", "Zl", "Zp", "Zs"):
            return ch
    return None


def check_cmdline_arg(key: str, value: str | None) -> None:
    """``key[=value]`` is exactly one kernel argument; raises ExtlinuxError naming what is wrong."""
    if not isinstance(key, str) or not _ARG_NAME.match(key):
        raise ExtlinuxError(f"kernel argument name {key!r} refused: a name is letters, digits, '_', '-' and '.' "
                            "(no '=', no spaces), as the kernel's command-line parser reads it")  # fmt: skip
    if value is None:
        return
    ch = _bad_char(value)
    if ch is not None:
        raise ExtlinuxError(f"kernel argument {key}={value!r} refused: the value contains {ch!r} (U+{ord(ch):04X}); "
                            "whitespace, quotes and control or line-separator characters would split it into "
                            "several arguments or cut the APPEND line")  # fmt: skip
    check_value(f"{key}={value}")


def check_swiotlb(value: str | None) -> int:
    """A ``swiotlb=`` value the stock kernels read as intended, with 1..SWIOTLB_MAX_SLOTS slots; returns the slots."""
    m = _SWIOTLB.match(value or "")
    if m is None:
        shown = "swiotlb" if value is None else f"swiotlb={value}"
        raise ExtlinuxError(f"{shown} refused: expected <slots>[,<nareas>][,force] with a decimal slot count > 0 "
                            "(never 0, noforce or a bare flag: no pool breaks devices that cannot use the IOMMU; a "
                            "leading 0 or 0x is read as octal or hex)")  # fmt: skip
    slots = int(m.group(1))
    if slots > SWIOTLB_MAX_SLOTS:
        raise ExtlinuxError(f"swiotlb={value} refused: {slots} slots is {slots * SWIOTLB_SLOT_BYTES >> 20} MiB of "
                            f"bounce buffer; at most {SWIOTLB_MAX_SLOTS} slots "
                            f"({SWIOTLB_MAX_SLOTS * SWIOTLB_SLOT_BYTES >> 20} MiB), allocated at boot from low "
                            "memory")  # fmt: skip
    return slots


def check_kernel_arg(key: str, value: str | None, allow_root_change: bool = False, removing: bool = False) -> None:
    """What a caller may set (or remove) in APPEND: one well-formed argument, no change of which system boots
    unless allowed, a bounded SWIOTLB pool."""
    check_cmdline_arg(key, None if removing else value)
    if key.replace("-", "_") in PROTECTED_ARGS and not allow_root_change:
        where = "from" if removing else "in"
        raise ExtlinuxError(f"refusing to {'remove' if removing else 'set'} {key}= {where} APPEND: it decides which "
                            "system boots; set allow_root_change to change it")  # fmt: skip
    if key == "swiotlb" and not removing:
        check_swiotlb(value)


def split_cmdline(cmdline: str) -> list[str]:
    return cmdline.split()


def _kernel_part(tokens: list[str]) -> int:
    """Index of '--' (the kernel's arguments end there; the rest is init's), else len(tokens)."""
    return tokens.index("--") if "--" in tokens else len(tokens)


def get_cmdline_arg(cmdline: str, key: str) -> str | bool | None:
    """Last occurrence wins, as the kernel parses early params; None = bare flag; False = absent."""
    value: str | bool | None = False
    tokens = split_cmdline(cmdline)
    for token in tokens[: _kernel_part(tokens)]:
        k, sep, v = token.partition("=")
        if k == key:
            value = v if sep else None
    return value


def set_cmdline_arg(cmdline: str, key: str, value: str | None) -> str:
    """Set ``key=value`` (or a bare flag for None): replace the first occurrence, drop later duplicates; a new
    argument goes before a '--' so the kernel, not init, gets it."""
    check_cmdline_arg(key, value)
    token = key if value is None else f"{key}={value}"
    tokens = split_cmdline(cmdline)
    cut = _kernel_part(tokens)
    out, done = [], False
    for t in tokens[:cut]:
        if t.partition("=")[0] == key:
            if not done:
                out.append(token)
                done = True
            continue
        out.append(t)
    if not done:
        out.append(token)
    return " ".join(out + tokens[cut:])


def remove_cmdline_arg(cmdline: str, key: str) -> str:
    check_cmdline_arg(key, None)
    tokens = split_cmdline(cmdline)
    cut = _kernel_part(tokens)
    return " ".join([t for t in tokens[:cut] if t.partition("=")[0] != key] + tokens[cut:])


def parse_extlinux(text: str, source: str = "extlinux.conf") -> ExtlinuxConfig:
    return ExtlinuxConfig(text, source)
