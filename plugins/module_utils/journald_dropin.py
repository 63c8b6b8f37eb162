# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The journald drop-in owned by edgeslim (block ``journal_volatile``): render, plan, write atomically, restore.

Its previous content (usually none) is journaled in the ``services`` layer before it is written, so a failed run
puts it back; the rollback entry point removes the file.
"""

from __future__ import annotations

import os
import re
from typing import Any

from ansible_collections.edgeslim.jetson.plugins.module_utils.journal import JournalError, write_atomic

HEADER = "# Managed by edgeslim.jetson.services (block journal_volatile); removed by its rollback.\n"
_KEY = re.compile(r"^[A-Z][A-Za-z0-9]*\Z")


class DropinError(ValueError):
    pass


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not isinstance(value, (str, int, float)):
        raise DropinError(f"journald value must be a string or number, got {type(value).__name__}")
    text = str(value)
    if "\n" in text or "\r" in text:
        raise DropinError(f"journald value must be one line, got {text!r}")
    return text


def render(settings: dict[str, Any]) -> str:
    """``[Journal]`` with one ``Key=value`` per setting, sorted as Ansible's dictsort (case-insensitive)."""
    lines = [HEADER, "[Journal]\n"]
    for key in sorted(settings, key=lambda k: (str(k).lower(), str(k))):
        if not isinstance(key, str) or not _KEY.match(key):
            raise DropinError(f"journald.conf key {key!r} is not a [Journal] option name (e.g. Storage)")
        lines.append(f"{key}={_value(settings[key])}\n")
    return "".join(lines)


def current(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise DropinError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from exc


def write(path: str, content: str, replace: Any = None) -> None:
    """Atomic write (the journal's: temp file, fsync, rename, fsync of the directory), mode 0644, directory 0755."""
    try:
        write_atomic(path, content, replace, mode=0o644, dir_mode=0o755, what="the journald drop-in")
    except JournalError as exc:
        raise DropinError(str(exc)) from exc


def restore(path: str, previous: str | None, replace: Any = None) -> bool:
    """Put back ``previous`` (None: the file did not exist). Returns whether the file changed."""
    now = current(path)
    if now == previous:
        return False
    if previous is None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise DropinError(f"cannot remove {path}: {exc.strerror}") from exc
    else:
        write(path, previous, replace)
    return True
