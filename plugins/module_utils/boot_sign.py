# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""UEFI Secure Boot signing of the boot files edgeslim.jetson.engine writes (docs/secure-boot.md).

Under Secure Boot L4TLauncher uses extlinux.conf, an FDT and each OVERLAYS file only with a detached ``<file>.sig``
that verifies against the db keys [EDK2-L4TLAUNCHER; JETSON-UEFI-SB]. The operator's hook (``boot.sign_command``, an
argv in which every ``{file}`` is replaced by the file's path) runs on the device once per file and must leave a
non-empty ``<file>.sig``:

- the current ``<file>.sig`` is set aside as ``<file>.sig.edgeslim-prev`` first, so a hook that writes nothing
  cannot pass on a stale signature;
- a hook that fails (exit status, timeout, cannot be started) or leaves no (or an empty) ``<file>.sig`` fails the
  signing; the signatures set aside are then put back (``Signer.put_back``) and the caller restores its files;
- after the whole apply succeeded, the set-aside signatures are dropped (``Signer.drop``);
- restoring (``resign``) is not strict: a file that cannot be signed again is a warning, its previous signature
  put back, so that the restore always completes and reports.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import Callable

SIG_SUFFIX = ".sig"
ASIDE_SUFFIX = ".sig.edgeslim-prev"
SIGN_TIMEOUT = 120  # seconds per file, as the boot-commit checker's hook (a signing service may be remote)
FILE_PLACEHOLDER = "{file}"
SECURE_BOOT_REFUSAL = (
    "UEFI Secure Boot is on, and L4TLauncher loads extlinux.conf, DTBs and overlays only with a detached <file>.sig "
    "made with a db key: an unsigned change would boot the fallback entry. Set boot.sign_command "
    "(edgeslim_secure_boot_sign_command: argv with {file}; it must write <file>.sig) to sign what the boot layers "
    "write, or leave swiotlb and carveouts out. Nothing was changed"
)


class SignError(Exception):
    """Signing a boot file failed; the message says which file and why."""


def check_command(command: list[str]) -> str | None:
    """Why ``command`` cannot be a signing hook, or None (an empty command means no hook)."""
    if not command:
        return None
    if not all(isinstance(arg, str) for arg in command) or not command[0]:
        return "boot.sign_command must be an argv list of strings, its first the program to run"
    if not any(FILE_PLACEHOLDER in arg for arg in command):
        return (f"boot.sign_command {command!r} does not name the file to sign: put {FILE_PLACEHOLDER} where the "
                "hook takes the path (it must write <file>.sig)")  # fmt: skip
    return None


def hook_argv(command: list[str], path: str) -> list[str]:
    return [arg.replace(FILE_PLACEHOLDER, path) for arg in command]


def fsync_path(path: str, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def run_hook(command: list[str], path: str, timeout: float = SIGN_TIMEOUT) -> str | None:
    """Run the hook for ``path`` (no shell; its whole process group is killed on a timeout); the error, or None
    when it exited 0 and left a non-empty ``<path>.sig`` (then made durable)."""
    argv = hook_argv(command, path)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)  # fmt: skip
    except OSError as exc:
        return f"the hook {argv[0]} cannot be run: {exc.strerror}"
    try:
        _out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return f"the hook {argv[0]} timed out after {timeout:g} s"
    if proc.returncode != 0:
        text = err.decode("utf-8", "replace").strip()[-300:] or "no error output"
        return f"the hook failed (rc {proc.returncode}): {text}"
    sig = path + SIG_SUFFIX
    try:
        if os.path.getsize(sig) == 0:
            return f"the hook left an empty {sig}"
        fsync_path(sig)
        fsync_path(os.path.dirname(sig) or ".", directory=True)
    except OSError:
        return f"the hook left no {sig}"
    return None


def failure(path: str, error: str) -> str:
    return (f"signing {path} for UEFI Secure Boot failed: {error} -- L4TLauncher would not load the file under "
            "Secure Boot")  # fmt: skip


class Signer:
    """Signs the files of one apply, keeping each file's previous signature aside until the apply is over."""

    def __init__(self, command: list[str], timeout: float = SIGN_TIMEOUT) -> None:
        self.command, self.timeout = list(command), timeout
        self.aside: dict[str, bool] = {}  # path -> it had a signature, now at <path>.sig.edgeslim-prev
        self.signed: list[str] = []

    def set_aside(self, path: str) -> None:
        if path in self.aside:
            return  # signed earlier in this apply: the signature kept aside is still the one from before it
        sig = path + SIG_SUFFIX
        had = os.path.lexists(sig)
        if had:
            os.replace(sig, path + ASIDE_SUFFIX)
        self.aside[path] = had

    def sign(self, path: str) -> None:
        """Set the current signature aside, run the hook, require ``<path>.sig``; raises SignError."""
        try:
            self.set_aside(path)
        except OSError as exc:
            raise SignError(failure(path, f"cannot set {path}{SIG_SUFFIX} aside: {exc.strerror}")) from None
        error = run_hook(self.command, path, self.timeout)
        if error:
            raise SignError(failure(path, error))
        self.signed.append(path)

    def put_back(self) -> list[str]:
        """Every signature set aside back in place (a file that had none loses the one the hook wrote); the
        errors, if any."""
        errors = []
        for path, had in self.aside.items():
            sig = path + SIG_SUFFIX
            try:
                if had:
                    os.replace(path + ASIDE_SUFFIX, sig)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(sig)
            except OSError as exc:
                errors.append(f"{sig}: {exc}")
        self.aside.clear()
        return errors

    def drop(self) -> None:
        """The apply succeeded: the signatures set aside are no longer needed."""
        for path in self.aside:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path + ASIDE_SUFFIX)
        self.aside.clear()


def resign(command: list[str], paths: list[str], warn: Callable[[str], None], timeout: float = SIGN_TIMEOUT) -> list:
    """Sign restored files again, never strictly: each failure is a warning (returned and passed to ``warn``) and
    that file's previous signature is put back, so a restore always completes."""
    warnings = []
    for path in paths:
        signer = Signer(command, timeout)
        try:
            signer.sign(path)
        except SignError as exc:
            errors = signer.put_back()
            note = f"{exc} (while restoring: the previous signature was put back)"
            if errors:
                note = f"{exc} (while restoring; the previous signature could not be put back: {'; '.join(errors)})"
            warnings.append(note)
            warn(note)
            continue
        signer.drop()
    return warnings
