# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""edgeslim commit-or-revert, run by edgeslim-boot-commit.service at every boot (greenboot's pattern, one setting).

For each pending boot change in /var/lib/edgeslim/pending/*.json: count this boot, run its health checks, and
either commit (write the result, drop the pending record) or, when a check fails or the change has been booted
max_boots times without committing, point extlinux.conf's DEFAULT back at the previous entry and reboot.
Standalone on purpose: it must work at boot without Ansible. Checks that need the device's own kernel
(command line, kernel log) cannot be made in a container and are reported as unverifiable, never as passed.
"""

from __future__ import annotations

import datetime
import glob
import json
import os
import subprocess
import sys
import tempfile

STATE = "/var/lib/edgeslim"
PENDING = os.path.join(STATE, "pending")
RESULTS = os.path.join(STATE, "boot-commit")
DT_ROOT = "/sys/firmware/devicetree/base"


def now() -> str:
    # timezone.utc, not datetime.UTC: JetPack 6 (Ubuntu 22.04) runs Python 3.10 on the device.
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def write_json(path: str, doc: dict) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp.")
    with os.fdopen(fd, "w") as handle:
        json.dump(doc, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def in_container() -> bool:
    return run(["systemd-detect-virt", "--container"]).returncode == 0


def checks(pending: dict) -> tuple[list[str], list[str]]:
    """(failures, notes)."""
    spec = pending.get("checks", {})
    failures, notes = [], []
    for unit in spec.get("units_active", []):
        state = run(["systemctl", "is-active", unit]).stdout.strip()
        if state != "active":
            failures.append(f"{unit} is {state or 'unknown'}")
    container = in_container()
    for arg in spec.get("cmdline_contains", []):
        if container:
            notes.append(f"cmdline check for {arg} not possible in a container (host kernel)")
            continue
        with open("/proc/cmdline") as handle:
            if arg not in handle.read().split():
                failures.append(f"/proc/cmdline lacks {arg} (the bootloader did not boot the managed entry)")
    for path in spec.get("dt_disabled", []):
        if container:
            notes.append(f"device-tree check for {path} not possible in a container (the live tree is not this boot's)")
            continue
        status = dt_status(spec.get("dt_root") or DT_ROOT, path)
        if status is None:
            failures.append(f"{path} is missing from the live device tree")
        elif status != "disabled":
            failures.append(f"{path} is {status} in the live device tree (the overlay was not applied)")
    for text in spec.get("kernel_log_absent", []):
        log = run(["dmesg"])
        if log.returncode != 0:
            notes.append(f"kernel log not readable ({log.stderr.strip()}); '{text}' not checked")
        elif text in log.stdout:
            failures.append(f"kernel log contains '{text}'")
    command = spec.get("command")
    if command:
        res = run(["/bin/sh", "-c", command])
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
    # mkstemp creates 0600: keep the file's own mode and owner, or a revert leaves extlinux.conf root-only (the
    # emulated-boot lane caught it: a reverted device's file was no longer world-readable as it is on L4T).
    stat = os.stat(path)
    os.fchmod(fd, stat.st_mode & 0o7777)
    os.fchown(fd, stat.st_uid, stat.st_gid)
    with os.fdopen(fd, "w", newline="") as handle:
        handle.write("".join(out))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def sign(argv: list[str], path: str) -> str | None:
    """Run the UEFI Secure Boot signing hook on a rewritten boot file; the error, or None when <path>.sig exists.

    Under Secure Boot L4TLauncher loads extlinux.conf only with a valid extlinux.conf.sig: a revert left unsigned
    would boot the fallback instead of the entry it reverts to."""
    try:
        done = run([arg.replace("{file}", path) for arg in argv])
    except OSError as exc:
        return f"signing hook {argv[0]}: {exc}"
    if done.returncode != 0:
        return f"signing hook failed (rc {done.returncode}): {done.stderr.strip()[-300:]}"
    if not os.path.isfile(path + ".sig") or os.path.getsize(path + ".sig") == 0:
        return f"signing hook left no {path}.sig"
    return None


def boot_identity(argv: list[str] | None) -> str:
    """The identity of this boot as the controller computes it (same argv), so it can wait for the next one."""
    if argv:
        return run(argv).stdout.strip()
    with open("/proc/sys/kernel/random/boot_id") as handle:
        return handle.read().strip()


def process(pending_dir: str = PENDING, results_dir: str = RESULTS) -> bool:
    """Check every pending change of this boot; True when the device must reboot (a change was reverted).

    Changes pending on the same extlinux.conf were booted together (one reboot for both boot layers): when one of
    them fails, DEFAULT goes back to the previous entry, which has none of them, so each of them is reported
    reverted -- a layer whose own checks passed is not in effect after that reboot either."""
    records = []
    for path in sorted(glob.glob(os.path.join(pending_dir, "*.json"))):
        with open(path) as handle:
            pending = json.load(handle)
        pending["boots"] = int(pending.get("boots", 0)) + 1
        write_json(path, pending)  # counted before anything else: a hang here still uses up a boot
        failures, notes = checks(pending)
        if pending["boots"] > int(pending.get("max_boots", 3)) and not failures:
            failures.append(f"booted {pending['boots']} times without committing")
        records.append((path, pending, failures, notes))
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
        result = {"layer": layer, "boots": pending["boots"], "checked": now(), "notes": notes, "failures": failures,
                  "boot_identity": boot_identity(pending.get("boot_id_command"))}  # fmt: skip
        if failures:
            set_default(pending["extlinux_path"], pending["previous_default"])
            if pending.get("sign_command"):
                error = sign(pending["sign_command"], pending["extlinux_path"])
                if error:
                    result["notes"] = [*notes, error]
            result["status"] = "reverted"
            result["reverted_to"] = pending["previous_default"]
            reboot = True
        else:
            result["status"] = "committed"
        os.unlink(path)
        write_json(os.path.join(results_dir, f"{layer}.json"), result)
        print(f"edgeslim-boot-commit: {layer}: {result['status']} {failures or ''} {notes or ''}")
    return reboot


def main() -> int:
    if process():
        subprocess.run(["systemctl", "reboot"], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
