"""A power cut at the N-th write primitive, for the fault sweeps of the device-side writes.

``PowerCut(roots, at=N)`` patches the primitives the device code writes files with -- ``os.open`` with a creating or
writing flag (``tempfile.mkstemp`` goes through it), ``open()`` for writing, ``os.write``, ``os.fsync``,
``os.rename``/``os.replace`` (``AnsibleModule.atomic_move`` renames with ``os.rename``), ``os.unlink``/``os.remove``,
``os.chmod``/``os.fchmod``/``os.chown``/``os.utime``, ``os.mkdir`` (``os.makedirs``) and ``os.rmdir`` -- counting
each call that touches a path under ``roots``; the caller may count its own steps too (``point``, e.g. a systemctl
call that changes a unit). Call number ``at`` raises ``PowerLoss`` (a ``BaseException``: no ``except Exception``
handles it, so no restore runs) before it does anything, and from then on the machine is off: every later primitive
under ``roots`` raises ``PowerLoss`` again without effect, so the ``except BaseException``/``finally`` cleanups of
the code (removing a temporary file, putting a file back) change nothing, as on a real power cut. (``pathlib``'s
writes are not seen on Python 3.9 and 3.10, whose accessor binds ``io.open`` early; the device code does not write
through ``pathlib``.)

``settle()`` then gives what the disk holds after the cut: a rename or an unlink either happened or not (it is
atomic; the model does not undo a rename whose directory was not fsynced), but file data reaches the disk only with
an ``fsync`` of that file: a file whose bytes differ from what it held at its last ``fsync`` (or at ``start``) gets
those bytes back, and a file created and never fsynced is left empty -- the zero-length file a power cut leaves after
a rename of unsynced data. Opening an existing file for writing truncates it, durably: it is left empty unless
fsynced after.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import stat
from typing import Any, Callable

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class PowerLoss(BaseException):
    """The power went: nothing after this point runs."""


def _text(path: Any) -> str:
    if isinstance(path, int):
        return _fd_path(path)
    path = os.fspath(path)
    return os.fsdecode(path)


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


class PowerCut:
    """Counts (``at=None``) or cuts (``at=N``) the write primitives under ``roots`` while active (``with``)."""

    def __init__(self, roots: list[str], at: int | None = None) -> None:
        self.roots = [os.path.realpath(r) for r in roots]
        self.at = at
        self.calls: list[str] = []  # "primitive path" of every counted call, in order
        self.dead = False
        self.synced: dict[int, bytes] = {}  # inode -> bytes at its last fsync (or at start)
        self.saved: dict[str, Any] = {}

    # ---- what is under test ---------------------------------------------------------------------------------------
    def mine(self, path: str) -> bool:
        if not path:
            return False
        real = os.path.realpath(path) if os.path.isabs(path) else os.path.realpath(os.path.abspath(path))
        return any(real == r or real.startswith(r + os.sep) for r in self.roots)

    def point(self, what: str) -> None:
        """One injection point: the power goes here when this is call number ``at``."""
        if self.dead:
            raise PowerLoss(f"power already lost; {what} does not happen")
        self.calls.append(what)
        if self.at is not None and len(self.calls) == self.at:
            self.dead = True
            raise PowerLoss(f"power lost before call {self.at}: {what}")

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for call in self.calls:
            kind = call.split(" ", 1)[0]
            out[kind] = out.get(kind, 0) + 1
        return out

    # ---- durability model -----------------------------------------------------------------------------------------
    def _files(self) -> list[str]:
        found = []
        for root in self.roots:
            for directory, _dirs, files in os.walk(root):
                found.extend(os.path.join(directory, f) for f in files)
        return found

    def start(self) -> None:
        for path in self._files():
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                with self.saved["builtin_open"](path, "rb") as handle:
                    self.synced[st.st_ino] = handle.read()

    def _synced_fd(self, fd: int) -> None:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            with self.saved["builtin_open"](f"/proc/self/fd/{fd}", "rb") as handle:  # the fd may be write-only
                self.synced[st.st_ino] = handle.read()

    def settle(self) -> None:
        """What survives the cut: unsynced file data is lost (see the module docstring)."""
        for path in self._files():
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                continue
            durable = self.synced.get(st.st_ino, b"")
            with self.saved["builtin_open"](path, "rb") as handle:
                current = handle.read()
            if current != durable:
                with self.saved["builtin_open"](path, "wb") as handle:
                    handle.write(durable)

    # ---- the patches ----------------------------------------------------------------------------------------------
    def __enter__(self) -> PowerCut:
        names = ("open", "write", "fsync", "rename", "replace", "unlink", "remove", "chmod", "fchmod", "chown",
                 "utime", "mkdir", "rmdir")  # fmt: skip
        self.saved = {name: getattr(os, name) for name in names}
        self.saved["builtin_open"] = builtins.open
        self.start()
        saved = self.saved

        def path_call(name: str, arity: int = 1) -> Callable[..., Any]:
            real = saved[name]

            def call(*args: Any, **kwargs: Any) -> Any:
                paths = [_text(a) for a in args[:arity]]
                if name == "mkdir" and os.path.isdir(paths[0]):
                    return real(*args, **kwargs)  # nothing to create (makedirs with exist_ok)
                if any(self.mine(p) for p in paths):
                    self.point(f"{name} {' -> '.join(paths)}")
                return real(*args, **kwargs)

            return call

        def fd_call(name: str) -> Callable[..., Any]:
            real = saved[name]

            def call(fd: int, *args: Any, **kwargs: Any) -> Any:
                path = _fd_path(fd)
                if self.mine(path):
                    self.point(f"{name} {path}")
                result = real(fd, *args, **kwargs)
                if name == "fsync" and self.mine(path):
                    self._synced_fd(fd)
                return result

            return call

        def truncated(path: str) -> None:
            """Truncating an existing file is metadata: assume it reached the disk, the data written after not."""
            with contextlib.suppress(OSError):
                self.synced[os.stat(path).st_ino] = b""

        def os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            if flags & WRITE_FLAGS and self.mine(_text(path)):
                self.point(f"open {_text(path)}")
                if flags & os.O_TRUNC:
                    truncated(_text(path))
            return saved["open"](path, flags, *args, **kwargs)

        def builtin_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            if not isinstance(file, int) and any(c in mode for c in "wax+") and self.mine(_text(file)):
                self.point(f"open {_text(file)}")
                if "w" in mode:
                    truncated(_text(file))
            return saved["builtin_open"](file, mode, *args, **kwargs)

        os.open = os_open
        builtins.open = io.open = builtin_open
        os.write = fd_call("write")
        os.fsync = fd_call("fsync")
        os.fchmod = fd_call("fchmod")
        for name in ("rename", "replace"):
            setattr(os, name, path_call(name, 2))
        for name in ("unlink", "remove", "chmod", "chown", "utime", "mkdir", "rmdir"):
            setattr(os, name, path_call(name))
        return self

    def __exit__(self, *exc: Any) -> None:
        for name, real in self.saved.items():
            if name == "builtin_open":
                builtins.open = io.open = real
            else:
                setattr(os, name, real)
