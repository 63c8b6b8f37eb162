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
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

JOURNAL_VERSION = 1
DEFAULT_JOURNAL_PATH = "/var/lib/edgeslim/journal.json"
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
    layers = doc.get("layers")
    if not isinstance(layers, dict):
        raise JournalError(f"{source}: 'layers' must be a JSON object")
    for name, layer in layers.items():
        if not isinstance(layer, dict):
            raise JournalError(f"{source}: layer {name!r} must be a JSON object, got {type(layer).__name__}")
    return doc


def parse_journal(text: str, source: str = "journal") -> dict[str, Any]:
    """Parse journal text. Empty text counts as an empty journal (a file created but never written)."""
    if not text.strip():
        return empty_journal()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise JournalError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from exc
    return validate_journal(doc, source)


def load_journal(path: str = DEFAULT_JOURNAL_PATH) -> dict[str, Any]:
    """Read the journal; a missing file is an empty journal. Corrupt content raises ``JournalError``
    (never silently replaced: it may be the only record of how to undo a change)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return empty_journal()
    except OSError as exc:
        raise JournalError(f"{path}: cannot read journal: {exc.strerror}") from exc
    return parse_journal(text, path)


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
    """Write ``doc`` atomically: temp file in the same directory + fsync + rename (+ fsync of the directory)."""
    text = dump_journal(doc)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
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
        raise JournalError(f"{path}: cannot write journal: {exc.strerror}") from exc
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
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Locked read-modify-write of one layer. ``update(old) -> new`` (``None`` clears the layer).

    Returns ``(old, new)``. Nothing is written when the layer is unchanged, so repeated calls are idempotent.
    """
    with journal_lock(path):
        doc = load_journal(path)
        old = get_layer(doc, layer)
        new = update(copy.deepcopy(old))
        if new == old:
            return old, new
        write_journal(path, with_layer(doc, layer, new), replace=replace)
        return old, new
