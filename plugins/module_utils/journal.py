# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""On-device change journal (contract 2 in the team notes, documented in docs/journal.md).

One JSON document, ``/var/lib/edgeslim/journal.json`` by default::

    {"version": 1, "layers": {"services": {...}, "swiotlb": {...}, "carveouts": {...}}}

Every layer owns exactly one key under ``layers`` and only ever reads/writes that key: ``update_layer`` loads
the document, replaces one layer and writes the whole document back, so the other layers are carried over
byte-for-byte in meaning. Writes are atomic: a temporary file in the same directory, ``fsync``, then a rename
over the journal (``os.replace`` or Ansible's ``module.atomic_move``), then an ``fsync`` of the directory so the
rename itself survives a power cut -- a Jetson that loses power mid-write keeps either the old or the new journal,
never a torn one. A sidecar ``<journal>.lock`` serialises concurrent writers (e.g. two plays on one device).

A second copy, ``<journal>.prev``, is written (atomically, fsynced) just before the journal is replaced, so a
journal damaged afterwards (truncated by a filesystem repair, zeroed by a bad flash, edited by hand) still has a
readable copy of the same or the one-older generation. Each write through ``update_layer`` increments the
document's ``generation``; a restore that falls back to the copy names the generation it used, and refuses a copy
that what is still legible of the damaged journal shows to be another generation or run. An empty or unparsable
journal is never reset: writers refuse it; readers that restore (``load_journal_fallback``) fall back to the copy
with a warning.

Pure Python, no Ansible imports: the modules pass ``module.atomic_move`` as ``replace``.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import errno
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

JOURNAL_VERSION = 1
DEFAULT_JOURNAL_PATH = "/var/lib/edgeslim/journal.json"
PREV_SUFFIX = ".prev"
CORRUPT_SUFFIX = ".corrupt"
KNOWN_LAYERS = ("services", "swiotlb", "carveouts")


class JournalError(ValueError):
    """The journal cannot be read or written safely (corrupt JSON, wrong schema, I/O error)."""


def utc_now() -> str:
    """ISO-8601 UTC timestamp with a ``Z`` suffix, second resolution."""
    # datetime.UTC needs Python 3.11; L4T R36 (Ubuntu 22.04) ships 3.10.
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def empty_journal() -> dict[str, Any]:
    return {"version": JOURNAL_VERSION, "layers": {}}


def validate_journal(doc: Any, source: str = "journal") -> dict[str, Any]:
    """Check the top-level schema; return the document. Layer contents belong to their owners."""
    if not isinstance(doc, dict):
        raise JournalError(f"{source}: top level must be a JSON object, got {type(doc).__name__}")
    version = doc.get("version")
    if version != JOURNAL_VERSION:
        raise JournalError(
            f"{source}: unsupported journal version {version!r} (this collection writes {JOURNAL_VERSION})"
        )
    generation = doc.get("generation", 0)
    if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
        raise JournalError(f"{source}: 'generation' must be a non-negative integer, got {generation!r}")
    layers = doc.get("layers")
    if not isinstance(layers, dict):
        raise JournalError(f"{source}: 'layers' must be a JSON object")
    for name, layer in layers.items():
        if not isinstance(layer, dict):
            raise JournalError(f"{source}: layer {name!r} must be a JSON object, got {type(layer).__name__}")
    return doc


def parse_journal(text: str, source: str = "journal") -> dict[str, Any]:
    """Parse journal text. Empty text is an error: every write puts a whole document in place (temp file + rename),
    so an empty journal is a damaged one, and treating it as empty would lose the records of undone changes."""
    if not text.strip():
        raise JournalError(f"{source}: the journal is empty ({len(text)} bytes)")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise JournalError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from exc
    return validate_journal(doc, source)


def recovery_hint(path: str) -> str:
    """What to do about an unreadable journal (docs/journal.md, "Recovery")."""
    prev = path + PREV_SUFFIX
    return (
        f"It is never reset automatically: it may be the only record of how to undo a change. Recovery: "
        f"edgeslim.jetson.units state=restore (playbooks/rollback.yml) reads the copy {prev} when it is valid; "
        f"or inspect both files and restore the copy by hand (cp -p {prev} {path}); see docs/journal.md, Recovery"
    )


def _read_journal(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return empty_journal()
    except (OSError, UnicodeDecodeError) as exc:
        raise JournalError(f"{path}: cannot read journal: {getattr(exc, 'strerror', None) or exc}") from exc
    return parse_journal(text, path)


def load_journal(path: str = DEFAULT_JOURNAL_PATH) -> dict[str, Any]:
    """Read the journal; a missing file is an empty journal. Empty or corrupt content raises ``JournalError``
    naming the file and the recovery path (never silently replaced: it may be the only record of how to undo
    a change)."""
    try:
        return _read_journal(path)
    except JournalError as exc:
        raise JournalError(f"{exc}. {recovery_hint(path)}") from exc


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


# What a damaged journal may still show of itself: keys are sorted, so a truncated document starts with its
# generation, and each layer's object with its "created" stamp (the run that first wrote it).
_GENERATION_RE = re.compile(r'\A\s*\{\s*"generation":\s*(\d+)')
_CREATED_RE = r'"%s":\s*\{\s*"created":\s*"([^"]*)"'


def generation(doc: dict[str, Any]) -> int:
    """The document's write counter (0 for a journal written before generations were counted)."""
    return int(doc.get("generation", 0))


def _same_run(damaged_text: str, copy: dict[str, Any]) -> str | None:
    """Why the copy is not the damaged journal's generation or run (``None`` when nothing says it is not)."""
    match = _GENERATION_RE.match(damaged_text)
    if match:
        seen, have = int(match.group(1)), generation(copy)
        # the copy is written first: it holds the journal's generation, or the next one when a write was cut
        if have not in (seen, seen + 1):
            return f"the copy holds generation {have}, the damaged journal generation {seen}"
    for name, layer in sorted(copy["layers"].items()):
        created = re.search(_CREATED_RE % re.escape(name), damaged_text)
        if created and layer.get("created") != created.group(1):
            return (
                f"layer {name!r} of the copy was created {layer.get('created')}, "
                f"the damaged journal's at {created.group(1)} (another run)"
            )
    return None


def load_journal_fallback(path: str = DEFAULT_JOURNAL_PATH) -> tuple[dict[str, Any], str | None]:
    """For readers that restore: the journal, or -- when it is unreadable -- its copy ``<path>.prev`` with a
    warning (second item) naming the copy and the generation used. The copy is refused when what is still legible
    in the damaged journal (its generation, a layer's ``created`` stamp) names another generation or run. Raises
    ``JournalError`` naming both files and the recovery path when neither is usable."""
    try:
        return _read_journal(path), None
    except JournalError as exc:
        damaged = str(exc)
    prev = path + PREV_SUFFIX
    if not os.path.exists(prev):
        raise JournalError(f"{damaged}; no copy {prev} exists. {recovery_hint(path)}")
    try:
        doc = _read_journal(prev)
    except JournalError as exc:
        raise JournalError(f"{damaged}; its copy is unreadable too: {exc}. {recovery_hint(path)}") from exc
    mismatch = _same_run(_read_text(path), doc)
    if mismatch:
        raise JournalError(
            f"{damaged}; its copy {prev} is readable but not the same run ({mismatch}): refusing to restore "
            f"from it. {recovery_hint(path)}"
        )
    stamps = ", ".join(
        f"{name} created {layer.get('created')}" for name, layer in sorted(doc["layers"].items()) if "created" in layer
    )
    return doc, (
        f"{damaged}; using its copy {prev}: generation {generation(doc)}"
        + (f" ({stamps})" if stamps else "")
        + ", written just before the journal was last replaced"
    )


def dump_journal(doc: dict[str, Any]) -> str:
    """Stable serialisation (sorted keys, trailing newline) so diffs and checksums are meaningful."""
    validate_journal(doc, "journal to write")
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems refuse fsync on directories; the rename is still atomic
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


def write_journal(
    path: str, doc: dict[str, Any], replace: Callable[[str, str], Any] | None = None, mode: int = 0o600
) -> None:
    """Write ``doc`` atomically to ``<path>.prev`` and then to ``path``: each a temp file in the same directory +
    fsync + rename (+ fsync of the directory). The copy lands first, so whichever file a damage hits, the other
    holds this generation or the one before it."""
    text = dump_journal(doc)
    write_atomic(path + PREV_SUFFIX, text, None, mode)
    write_atomic(path, text, replace, mode)


def write_atomic(
    path: str,
    text: str,
    replace: Callable[[str, str], Any] | None = None,
    mode: int = 0o600,
    dir_mode: int = 0o700,
    what: str = "journal",
) -> None:
    """Temp file in the same directory + fsync + rename + fsync of the directory (``JournalError`` on failure).
    Also used for other small files edgeslim owns (the journald drop-in)."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, mode=dir_mode, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".journal.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise JournalError(f"{path}: cannot create a temporary file in {directory}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        (replace or os.replace)(tmp, path)
        os.chmod(path, mode)  # atomic_move applies the umask to a new destination; the journal stays private
        _fsync_dir(directory)
    except OSError as exc:
        raise JournalError(f"{path}: cannot write {what}: {exc.strerror}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def journal_lock(path: str) -> Iterator[None]:
    """Exclusive advisory lock on ``<path>.lock`` for a read-modify-write cycle."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def get_layer(doc: dict[str, Any], layer: str) -> dict[str, Any] | None:
    """A deep copy of one layer, or None when the layer is absent."""
    value = doc["layers"].get(layer)
    return copy.deepcopy(value) if value is not None else None


def with_layer(doc: dict[str, Any], layer: str, data: dict[str, Any] | None) -> dict[str, Any]:
    """A new document where only ``layer`` is replaced (``data=None`` removes it)."""
    if not isinstance(layer, str) or not layer:
        raise JournalError("layer name must be a non-empty string")
    new = copy.deepcopy(doc)
    if data is None:
        new["layers"].pop(layer, None)
    else:
        if not isinstance(data, dict):
            raise JournalError(f"layer {layer!r} must be a dict, got {type(data).__name__}")
        new["layers"][layer] = copy.deepcopy(data)
    return new


def update_layer(
    path: str,
    layer: str,
    update: Callable[[dict[str, Any] | None], dict[str, Any] | None],
    replace: Callable[[str, str], Any] | None = None,
    fallback: bool = False,
    warnings: list[str] | None = None,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Locked read-modify-write of one layer. ``update(old) -> new`` (``None`` clears the layer).

    Returns ``(old, new)``. Nothing is written when the layer is unchanged, so repeated calls are idempotent.
    An unreadable journal raises ``JournalError``; with ``fallback`` (a restore finishing) the copy
    ``<path>.prev`` is the base instead, the damaged journal is kept as ``<path>.corrupt`` and the warning is
    appended to ``warnings``.
    """
    with journal_lock(path):
        if fallback:
            doc, warning = load_journal_fallback(path)
        else:
            doc, warning = load_journal(path), None
        old = get_layer(doc, layer)
        new = update(copy.deepcopy(old))
        if new == old and warning is None:
            return old, new
        if warning is not None:
            try:
                os.replace(path, path + CORRUPT_SUFFIX)
            except OSError as exc:
                raise JournalError(f"{path}: cannot keep the damaged journal aside: {exc.strerror}") from exc
            if warnings is not None:
                warnings.append(f"{warning}; the damaged journal is kept as {path + CORRUPT_SUFFIX}")
        updated = with_layer(doc, layer, new)
        updated["generation"] = generation(doc) + 1
        write_journal(path, updated, replace=replace)
        return old, new
