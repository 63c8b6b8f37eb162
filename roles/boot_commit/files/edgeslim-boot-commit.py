# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""edgeslim commit-or-revert, run by edgeslim-boot-commit.service at every boot (greenboot's pattern, one setting).

For each pending boot change in /var/lib/edgeslim/pending/*.json: count this boot, run its health checks, and
either commit (write the result, drop the pending record) or, when a check fails or the change has been booted
max_boots times without committing, point extlinux.conf's DEFAULT back at the previous entry and reboot.
Standalone on purpose: it must work at boot without Ansible. Checks that need the device's own kernel
(command line, kernel log) cannot be made in a container and are reported as unverifiable, never as passed.

It fails safe: every check command has a timeout (checks.timeout in the record, default CHECK_TIMEOUT s) and a
timeout is a failure; max_boots is tested before the checks; an unreadable record or an unexpected error reverts;
a revert only names a label that exists; results are written best effort (a read-only or full /var never stops
the extlinux.conf decision); a revert that /boot has no room for leaves extlinux.conf whole and no temporary file,
says so in one log line and is owed: the record is kept and the next boot reverts first.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import traceback

STATE = "/var/lib/edgeslim"
PENDING = os.path.join(STATE, "pending")
RESULTS = os.path.join(STATE, "boot-commit")
DT_ROOT = "/sys/firmware/devicetree/base"
EXTLINUX = "/boot/extlinux/extlinux.conf"  # reverted when a record is too damaged to name its file
# Seconds per check command; checks.timeout in the record overrides it. The unit's TimeoutStartSec must cover the
# checks of every pending record, or systemd kills the checker before it can revert.
CHECK_TIMEOUT = 120
REQUIRED = {"layer": str, "extlinux_path": str, "previous_default": str}
# A revert that cannot be written for want of room (or a read-only /boot) is kept and retried at the next boot.
NO_ROOM = {errno.ENOSPC: "/boot is full", errno.EFBIG: "the file is too large for /boot",
           errno.EDQUOT: "the disk quota of /boot is used up", errno.EROFS: "/boot is read-only"}  # fmt: skip


class CheckTimeout(Exception):
    pass


def log(message: str) -> None:
    print(f"edgeslim-boot-commit: {message}", file=sys.stderr, flush=True)


def now() -> str:
    # timezone.utc, not datetime.UTC: JetPack 6 (Ubuntu 22.04) runs Python 3.10 on the device.
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def write_json(path: str, doc: dict) -> None:
    """Atomic: the file is the old or the new document, and a failed write (ENOSPC, EROFS) leaves no temp file."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp.")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(doc, handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def try_write_json(path: str, doc: dict) -> bool:
    """Best effort (results, boot counts): a read-only or full /var is logged, never fatal."""
    try:
        write_json(path, doc)
        return True
    except OSError as exc:
        log(f"cannot write {path}: {exc}")
        return False


def run(argv: list[str], timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run argv; on timeout kill its whole process group (a shell's children too) and raise CheckTimeout."""
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:  # fmt: skip
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise CheckTimeout(f"timed out after {timeout:g} s") from None
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def check_timeout(spec: dict) -> float:
    value = spec.get("timeout")
    if value is None:  # unset (or null from an argument spec's sub-option): the default
        return CHECK_TIMEOUT
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"checks.timeout must be a positive number of seconds, got {value!r}")
    return value


def in_container(timeout: float = CHECK_TIMEOUT) -> bool:
    try:
        return run(["systemd-detect-virt", "--container"], timeout).returncode == 0
    except CheckTimeout:
        return False  # then the kernel checks are made, and fail rather than pass unverified


def checks(pending: dict) -> tuple[list[str], list[str]]:
    """(failures, notes)."""
    spec = pending.get("checks", {})
    timeout = check_timeout(spec)
    failures, notes = [], []
    for unit in spec.get("units_active") or []:
        try:
            state = run(["systemctl", "is-active", unit], timeout).stdout.strip()
        except CheckTimeout as exc:
            failures.append(f"systemctl is-active {unit} {exc}")
            continue
        if state != "active":
            failures.append(f"{unit} is {state or 'unknown'}")
    container = in_container()
    for arg in spec.get("cmdline_contains") or []:
        if container:
            notes.append(f"cmdline check for {arg} not possible in a container (host kernel)")
            continue
        with open("/proc/cmdline") as handle:
            if arg not in handle.read().split():
                failures.append(f"/proc/cmdline lacks {arg} (the bootloader did not boot the managed entry)")
    for path in spec.get("dt_disabled") or []:
        if container:
            notes.append(f"device-tree check for {path} not possible in a container (the live tree is not this boot's)")
            continue
        status = dt_status(spec.get("dt_root") or DT_ROOT, path)
        if status is None:
            failures.append(f"{path} is missing from the live device tree")
        elif status != "disabled":
            failures.append(f"{path} is {status} in the live device tree (the overlay was not applied)")
    for text in spec.get("kernel_log_absent") or []:
        try:
            dmesg = run(["dmesg"], timeout)
        except CheckTimeout as exc:
            failures.append(f"dmesg {exc}; '{text}' not checked")
            continue
        if dmesg.returncode != 0:
            notes.append(f"kernel log not readable ({dmesg.stderr.strip()}); '{text}' not checked")
        elif text in dmesg.stdout:
            failures.append(f"kernel log contains '{text}'")
    command = spec.get("command")
    if command:
        try:
            res = run(["/bin/sh", "-c", command], timeout)
        except CheckTimeout as exc:
            failures.append(f"health command {exc}: {command}")
            return failures, notes
        if res.returncode != 0:
            failures.append(f"health command failed (rc {res.returncode}): {command}")
    return failures, notes


def dt_status(root: str, path: str) -> str | None:
    """status of a node of the live device tree (kernel fs layout); "okay" when absent (DT spec); None = no node."""
    node = os.path.join(root, path.lstrip("/"))
    if not os.path.isdir(node):
        return None
    try:
        with open(os.path.join(node, "status"), "rb") as handle:
            return handle.read().split(b"\0", 1)[0].decode("utf-8", "replace") or "okay"
    except FileNotFoundError:
        return "okay"


def set_default(path: str, label: str) -> None:
    """Rewrite only the DEFAULT line (L4TLauncher: '#' starts a comment; keys are prefixes of the trimmed line)."""
    with open(path, newline="") as handle:
        lines = handle.read().splitlines(keepends=True)
    out, done = [], False
    for line in lines:
        code = line.split("#", 1)[0].strip()
        if code.startswith("DEFAULT") and not done:
            eol = line[len(line.rstrip("\r\n")) :]
            out.append(f"DEFAULT {label}{eol or os.linesep}")
            done = True
        else:
            out.append(line)
    if not done:
        out.insert(0, f"DEFAULT {label}\n")
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".extlinux.")
    try:
        # mkstemp creates 0600: keep the file's own mode and owner, or a revert leaves extlinux.conf root-only (the
        # emulated-boot lane caught it: a reverted device's file was no longer world-readable as it is on L4T).
        stat = os.stat(path)
        os.fchmod(fd, stat.st_mode & 0o7777)
        os.fchown(fd, stat.st_uid, stat.st_gid)
        with os.fdopen(fd, "w", newline="") as handle:
            fd = -1  # the handle owns it now
            handle.write("".join(out))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        # /boot full (ENOSPC, EFBIG) or read-only: extlinux.conf was never touched; leave no temporary file behind
        # to take the space a retry needs.
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename survives a power cut
        dir_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def labels(path: str) -> tuple[list[str], str | None]:
    """(LABEL names in file order, DEFAULT) as L4TLauncher reads them: '#' comments, keys prefix the trimmed line."""
    names, default = [], None
    with open(path, newline="") as handle:
        for line in handle.read().splitlines():
            code = line.split("#", 1)[0].strip()
            if code.startswith("LABEL"):
                names.append(code[len("LABEL") :].strip())
            elif code.startswith("DEFAULT") and default is None:
                default = code[len("DEFAULT") :].strip()
    return names, default


def revert_target(path: str, pending: dict) -> str:
    """A label that exists: DEFAULT naming no entry makes L4TLauncher boot the first one, often the managed entry.

    The recorded previous label, else the stock label recorded at arm time, else the first entry that is not the
    managed one (recorded, else the DEFAULT this boot was made with)."""
    names, default = labels(path)
    for key in ("previous_default", "stock_default"):
        label = pending.get(key)
        if isinstance(label, str) and label in names:
            return label
    managed = pending.get("managed_label") if isinstance(pending.get("managed_label"), str) else default
    for label in names:
        if label != managed:
            return label
    raise ValueError(f"{path} has no entry to revert to (labels {names}, managed {managed!r})")


def sign(argv: list[str], path: str) -> str | None:
    """Run the UEFI Secure Boot signing hook on a rewritten boot file; the error, or None when <path>.sig exists.

    Under Secure Boot L4TLauncher loads extlinux.conf only with a valid extlinux.conf.sig: a revert left unsigned
    would boot the fallback instead of the entry it reverts to."""
    try:
        done = run([arg.replace("{file}", path) for arg in argv], CHECK_TIMEOUT)
    except (OSError, CheckTimeout) as exc:
        return f"signing hook {argv[0]}: {exc}"
    if done.returncode != 0:
        return f"signing hook failed (rc {done.returncode}): {done.stderr.strip()[-300:]}"
    if not os.path.isfile(path + ".sig") or os.path.getsize(path + ".sig") == 0:
        return f"signing hook left no {path}.sig"
    return None


def boot_identity(argv: list[str] | None) -> str:
    """The identity of this boot as the controller computes it (same argv), so it can wait for the next one."""
    try:
        if argv:
            return run(argv, CHECK_TIMEOUT).stdout.strip()
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip()
    except Exception as exc:  # the verdict matters more than its boot stamp
        log(f"boot identity unknown: {exc}")
        return ""


def read_pending(path: str) -> tuple[dict, str | None]:
    """(record, None), or (what could be salvaged, why it cannot be trusted): never raises on a bad record."""
    layer = os.path.splitext(os.path.basename(path))[0]
    try:
        with open(path, "rb") as handle:
            doc = json.loads(handle.read().decode("utf-8"))
    except (OSError, ValueError) as exc:  # empty, truncated, not JSON, not UTF-8 (JSONDecodeError is a ValueError)
        return {"layer": layer, "extlinux_path": EXTLINUX}, f"pending record {path} unreadable: {exc}"
    if not isinstance(doc, dict):
        return {"layer": layer, "extlinux_path": EXTLINUX}, f"pending record {path} is not a JSON object"
    bad = [key for key, kind in REQUIRED.items() if not isinstance(doc.get(key), kind) or not doc.get(key)]
    if bad:
        salvaged = {"layer": layer, "extlinux_path": EXTLINUX}
        if isinstance(doc.get("extlinux_path"), str) and doc["extlinux_path"]:
            salvaged["extlinux_path"] = doc["extlinux_path"]
        return salvaged, f"pending record {path} lacks {', '.join(bad)}"
    if doc["layer"] != layer:  # arm writes pending/<layer>.json; the verdict's file is named after the layer
        return {"layer": layer, "extlinux_path": doc["extlinux_path"]}, (
            f"pending record {path} names layer {doc['layer']!r}, not its file's {layer!r}"
        )
    try:
        doc["boots"] = int(doc.get("boots", 0))
        doc["max_boots"] = int(doc.get("max_boots", 3))
        if not isinstance(doc.get("checks", {}), dict):
            raise ValueError(f"checks is {type(doc['checks']).__name__}, not an object")
        check_timeout(doc.get("checks", {}))
    except (TypeError, ValueError) as exc:
        return {**doc, "boots": 0, "max_boots": 0}, f"pending record {path} invalid: {exc}"
    return doc, None


def evaluate(path: str) -> tuple[dict, list[str], list[str]]:
    """(record, failures, notes) of one pending record; any error becomes a failure, i.e. a revert."""
    pending, error = read_pending(path)
    if error:
        return pending, [f"{error}; reverting to an existing non-managed entry"], []
    owed = pending.get("revert_required")
    if owed:  # an earlier boot decided to revert and could not write /boot: no second chance for the checks
        return pending, [f"a revert failed at an earlier boot ({owed}); retrying it"], []
    try:
        pending["boots"] += 1
        # Counted before anything else: a hang or a crash still uses up a boot. A read-only /var cannot count;
        # the checks (each with a timeout) still decide.
        try_write_json(path, pending)
        if pending["boots"] > pending["max_boots"]:
            return pending, [f"booted {pending['boots']} times without committing"], []
        failures, notes = checks(pending)
        return pending, failures, notes
    except Exception as exc:
        log(traceback.format_exc())
        return pending, [f"checker error: {type(exc).__name__}: {exc}"], []


def labels_or_none(path: str) -> str | None:
    try:
        return labels(path)[1]
    except (OSError, ValueError):
        return None


def revert(pending: dict, result: dict) -> bool:
    """Point DEFAULT at an existing earlier entry and re-sign; True when extlinux.conf was rewritten."""
    path = pending["extlinux_path"]
    target = None
    try:
        target = revert_target(path, pending)
        set_default(path, target)
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno in NO_ROOM:
            # The safest state left: the entry this boot runs, extlinux.conf whole (the atomic write never touched
            # it; an in-place rewrite could leave it unparseable at a power cut), no reboot (it would boot the same
            # entry), and the revert owed at the next boot (process keeps the record).
            log(
                f"cannot revert {path} to {target!r}: {NO_ROOM[exc.errno]} ({os.strerror(exc.errno)}); "
                f"extlinux.conf is unchanged (DEFAULT {labels_or_none(path)}), no temporary file is left, and "
                f"the revert is retried at the next boot -- free space in {os.path.dirname(path)} and reboot"
            )
        else:
            log(traceback.format_exc())
        result["notes"] = [*result["notes"], f"revert of {path} failed: {type(exc).__name__}: {exc}"]
        result["status"] = "revert_failed"
        return False
    if pending.get("sign_command"):
        error = sign(pending["sign_command"], path)
        if error:
            result["notes"] = [*result["notes"], error]
    result["status"] = "reverted"
    result["reverted_to"] = target
    return True


def process(pending_dir: str = PENDING, results_dir: str = RESULTS) -> bool:
    """Check every pending change of this boot; True when the device must reboot (a change was reverted).

    Changes pending on the same extlinux.conf were booted together (one reboot for both boot layers): when one of
    them fails, DEFAULT goes back to the previous entry, which has none of them, so each of them is reported
    reverted -- a layer whose own checks passed is not in effect after that reboot either."""
    records = [(path, *evaluate(path)) for path in sorted(glob.glob(os.path.join(pending_dir, "*.json")))]
    failed_files: dict[str, list[str]] = {}
    for record in records:
        if record[2]:
            failed_files.setdefault(record[1]["extlinux_path"], []).append(record[1]["layer"])
    reboot = False
    for path, pending, failures, notes in records:
        layer = pending["layer"]
        others = [name for name in failed_files.get(pending["extlinux_path"], []) if name != layer]
        if others and not failures:
            failures = [f"booted together with {', '.join(others)}, which failed; the shared entry is reverted"]
        result = {"layer": layer, "boots": pending.get("boots"), "checked": now(), "notes": notes,
                  "failures": failures, "boot_identity": boot_identity(pending.get("boot_id_command"))}  # fmt: skip
        keep = False
        if failures:
            reverted = revert(pending, result)
            reboot = reverted or reboot
            keep = not reverted and result["status"] == "revert_failed"
        else:
            result["status"] = "committed"
        if keep:  # the revert is owed: the next boot retries it first (best effort on a full or read-only /var)
            try_write_json(path, {**pending, "revert_required": "; ".join(failures)})
        else:
            try:
                os.unlink(path)
            except OSError as exc:
                log(f"cannot remove {path}: {exc}")
        try_write_json(os.path.join(results_dir, f"{layer}.json"), result)
        print(f"edgeslim-boot-commit: {layer}: {result['status']} {failures or ''} {result['notes'] or ''}")
    return reboot


def emergency_revert() -> bool:
    """Last resort after an unexpected error outside a record: revert every pending record's file, best effort."""
    reboot = False
    for path in sorted(glob.glob(os.path.join(PENDING, "*.json"))):
        pending = read_pending(path)[0]
        result = {"notes": []}
        reboot = revert(pending, result) or reboot
        try:
            os.unlink(path)  # or the same error reverts and reboots at every boot
        except OSError as exc:
            log(f"cannot remove {path}: {exc}")
        log(f"{pending['layer']}: emergency {result['status']} {result['notes']}")
    return reboot


def main() -> int:
    status = 0
    try:
        reboot = process()
    except Exception:
        log(traceback.format_exc())
        status = 1
        try:
            reboot = emergency_revert()
        except Exception:
            log(traceback.format_exc())
            reboot = False
    if reboot:
        subprocess.run(["systemctl", "reboot"], check=False)
    return status


if __name__ == "__main__":
    sys.exit(main())
