# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""edgeslim commit-or-revert, run by edgeslim-boot-commit.service at every boot (greenboot's pattern, one setting).

For each pending boot change in /var/lib/edgeslim/pending/*.json: count this boot, run its health checks, and
either commit (write the result, drop the pending record) or, when a check fails or the change has been booted
max_boots times without committing, point extlinux.conf's DEFAULT back at the previous entry and reboot.
Standalone on purpose: it must work at boot without Ansible. Checks that need the device's own kernel
(command line, kernel log) cannot be made in a container and are reported as unverifiable, never as passed.

The management check (engine-armed records, checks.management) waits, up to a deadline, for the path the
controller reached the device on at arm time: the interface up with its address, a route to the controller (or,
for a pull device, the default gateway), and a listener on the SSH port -- so a change that kills the network is
reverted instead of committed on a device nobody can reach any more.

A trial boot (a record with ``trial``, written by edgeslim.jetson.engine where the device has kexec): extlinux.conf
kept DEFAULT on the stock entry and the managed entry was booted once with kexec, its command line carrying the
record's marker (``edgeslim.trial=<id>``). On the boot with the marker the checks run as above and, when they pass,
the managed entry becomes DEFAULT (atomic write, fsync) -- the commit. A boot without the marker is the device back
on the stock entry by itself (the trial kernel panicked and ``panic=`` reset the board, a watchdog reset, a power
cycle): the verdict is ``trial_failed``, nothing is rewritten and nothing reboots -- DEFAULT is the stock entry.

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
import ipaddress
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback

STATE = "/var/lib/edgeslim"
PENDING = os.path.join(STATE, "pending")
RESULTS = os.path.join(STATE, "boot-commit")
DT_ROOT = "/sys/firmware/devicetree/base"
EXTLINUX = "/boot/extlinux/extlinux.conf"  # reverted when a record is too damaged to name its file
CMDLINE = "/proc/cmdline"  # the trial marker: this boot is the kexec trial of the managed entry
# Seconds per check command; checks.timeout in the record overrides it. The unit's TimeoutStartSec must cover the
# checks of every pending record, or systemd kills the checker before it can revert.
CHECK_TIMEOUT = 120
REQUIRED = {"layer": str, "extlinux_path": str, "previous_default": str}
# A revert that cannot be written for want of room (or a read-only /boot) is kept and retried at the next boot.
NO_ROOM = {errno.ENOSPC: "/boot is full", errno.EFBIG: "the file is too large for /boot",
           errno.EDQUOT: "the disk quota of /boot is used up", errno.EROFS: "/boot is read-only"}  # fmt: skip


# The management check: kernel files, and iproute2 for the IPv4 addresses (the kernel has no file for them).
SYS_NET = "/sys/class/net"
PROC_NET = "/proc/net"
IP = "ip"
# Seconds the management path may take to come up (checks.management.wait). The wait happens once per boot (the
# records of one boot share the path) and the unit's TimeoutStartSec covers MANAGEMENT_WAIT_MAX plus the engine's
# own check commands at CHECK_TIMEOUT (test_the_unit_outlasts_the_management_wait).
MANAGEMENT_WAIT = 60
MANAGEMENT_WAIT_MAX = 180
POLL = 1.0
IP_TIMEOUT = 5.0
CLOCK = time.monotonic  # tests inject a clock and a sleep: no real waiting
SLEEP = time.sleep
MANAGEMENT_KEYS = {"interface": str, "addresses": list, "peer": (str, type(None)), "ssh_port": (int, type(None)),
                   "wait": (int, float)}  # fmt: skip
RTF_UP, RTF_REJECT = 0x0001, 0x0200
IFF_UP = 0x1
TCP_LISTEN = "0A"


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


def checks(pending: dict, cache: dict | None = None) -> tuple[list[str], list[str]]:
    """(failures, notes). ``cache`` carries the management check's outcome between the records of one boot."""
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
    if "management" in spec:
        key = json.dumps(spec["management"], sort_keys=True)
        if cache is None or key not in cache:
            outcome = management(spec["management"])
            if cache is not None:
                cache[key] = outcome
        else:
            outcome = cache[key]
        failures.extend(outcome[0])
        notes.extend(outcome[1])
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


# ---- the management path ----------------------------------------------------------------------------------------
def check_management(value: object) -> None:
    """A record's checks.management: false (switched off), {"skipped": why} (no path at arm time), or the path."""
    if value is False or (isinstance(value, dict) and isinstance(value.get("skipped"), str)):
        return
    if not isinstance(value, dict):
        raise ValueError(f"checks.management must be false or an object, got {value!r}")
    for key, kind in MANAGEMENT_KEYS.items():
        if key in value and (not isinstance(value[key], kind) or isinstance(value[key], bool)):
            raise ValueError(f"checks.management.{key} is {value[key]!r}")
    if not value.get("interface") or "/" in value["interface"]:
        raise ValueError(f"checks.management.interface must name an interface, got {value.get('interface')!r}")
    for address in [*value.get("addresses", []), *([value["peer"]] if value.get("peer") else [])]:
        if not isinstance(address, str):
            raise ValueError(f"checks.management: address {address!r} is not a string")
        ipaddress.ip_address(address)  # ValueError names the bad address
    if value.get("ssh_port") is not None and not 0 < value["ssh_port"] < 65536:
        raise ValueError(f"checks.management.ssh_port is {value['ssh_port']!r}")
    wait = value.get("wait", MANAGEMENT_WAIT)
    if not 0 < wait <= MANAGEMENT_WAIT_MAX:
        raise ValueError(f"checks.management.wait must be more than 0 and at most {MANAGEMENT_WAIT_MAX} s, "
                         f"got {wait!r}")  # fmt: skip


def management(spec: dict | bool) -> tuple[list[str], list[str]]:
    """(failures, notes): wait until the recorded path is back, at most its ``wait`` seconds (a deadline on CLOCK);
    at the deadline every part still missing is a failure that names it."""
    if spec is False:
        return [], ["management check switched off at arm time (boot.checks.<layer>.management: false)"]
    if not isinstance(spec, dict):  # read_pending refused anything else; true would be a record nobody wrote
        return [f"checks.management is {spec!r}, not a recorded path"], []
    if "skipped" in spec:
        return [], [f"management check skipped: {spec['skipped']}"]
    notes = []
    if spec.get("ssh_port") is None:
        mode = spec.get("mode") or "pull"
        notes.append(f"management check: no SSH port recorded ({mode} mode), listener not checked")
    if not spec.get("peer") and spec.get("peer_role") != "default route":
        notes.append(f"management check: no controller or gateway recorded for {spec['interface']}, route not checked")
    wait = spec.get("wait", MANAGEMENT_WAIT)
    deadline = CLOCK() + wait
    while True:
        missing = management_missing(spec, deadline)
        left = deadline - CLOCK()
        if not missing or left <= 0:
            break
        SLEEP(min(POLL, left))
    return [f"{what} (waited {wait:g} s)" for what in missing], notes


def management_missing(spec: dict, deadline: float) -> list[str]:
    """What of the recorded management path is missing now (empty: all there)."""
    iface = spec["interface"]
    state = link_state(iface)
    if state is not None:
        return [f"management interface {iface} {state}"]  # the rest cannot be there without the link
    missing = []
    wanted = [ipaddress.ip_address(a) for a in spec.get("addresses") or []]
    have, error = interface_addresses(iface, deadline)
    for address in wanted:
        if address not in have:
            if error and address.version == 4:
                missing.append(f"management address {address} on {iface} not readable: {error}")
            else:
                listed = ", ".join(sorted(str(a) for a in have)) or "none"
                missing.append(f"management address {address} is not on {iface} (it has {listed})")
    peer = spec.get("peer")
    if peer or spec.get("peer_role") == "default route":  # a pull device without a gateway: its default route
        label = f"the {spec.get('peer_role') or 'peer'} {peer}" if peer else "the default destination"
        route = route_problem(iface, ipaddress.ip_address(peer) if peer else None, have, label)
        if route:
            missing.append(route)
    port = spec.get("ssh_port")
    if port is not None and not listening(port, wanted):
        missing.append(f"nothing listens on TCP port {port} (the SSH port the controller used) "
                       f"on {', '.join(str(a) for a in wanted) or 'any address'}")  # fmt: skip
    return missing


def read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


def link_state(iface: str) -> str | None:
    """None when the interface is up (operstate up; or unknown, as drivers without operstate and loopback report,
    with IFF_UP set and the carrier on); else what is wrong, for the message."""
    base = os.path.join(SYS_NET, iface)
    if not os.path.isdir(base):
        return f"is missing ({base} does not exist)"
    operstate = (read(os.path.join(base, "operstate")) or "").strip()
    if operstate == "up":
        return None
    if operstate == "unknown":
        try:
            flags = int((read(os.path.join(base, "flags")) or "0").strip(), 16)
        except ValueError:
            flags = 0
        if flags & IFF_UP and (read(os.path.join(base, "carrier")) or "").strip() == "1":
            return None
    return f"is not up (operstate {operstate or 'unreadable'})"


def interface_addresses(iface: str, deadline: float) -> tuple[set, str | None]:
    """(addresses of the interface, why the IPv4 ones could not be read): IPv6 from /proc/net/if_inet6, both
    families from ``ip -j addr show dev <iface>`` (IPv4 addresses have no kernel file)."""
    have = set()
    for line in (read(os.path.join(PROC_NET, "if_inet6")) or "").splitlines():
        fields = line.split()
        if len(fields) == 6 and fields[5] == iface:
            with contextlib.suppress(ValueError):
                have.add(ipaddress.ip_address(bytes.fromhex(fields[0])))
    error = None
    try:
        res = run([IP, "-j", "addr", "show", "dev", iface], max(0.5, min(IP_TIMEOUT, deadline - CLOCK())))
        if res.returncode != 0:
            error = f"{IP} -j addr failed (rc {res.returncode}): {res.stderr.strip()[:200]}"
        else:
            for link in json.loads(res.stdout or "[]"):
                for info in link.get("addr_info") or []:
                    with contextlib.suppress(ValueError, TypeError):
                        have.add(ipaddress.ip_address(info.get("local")))
    except (OSError, CheckTimeout, ValueError, AttributeError) as exc:
        error = f"{IP} -j addr: {exc}"
    return have, error


def hex_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as /proc/net prints it: 32-bit words in the host's byte order (8 hex digits, or 32 for IPv6)."""
    words = [int(text[i : i + 8], 16) for i in range(0, len(text), 8)]
    return ipaddress.ip_address(struct.pack(f"={len(words)}L", *words))


def routes() -> list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str, int]]:
    """(destination, interface, metric) of every usable route in /proc/net/route (main table) and
    /proc/net/ipv6_route; rejected (unreachable) routes are left out."""
    out = []
    for line in (read(os.path.join(PROC_NET, "route")) or "").splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        with contextlib.suppress(ValueError):
            flags = int(fields[3], 16)
            if flags & RTF_UP and not flags & RTF_REJECT:
                dest, mask = hex_address(fields[1]), hex_address(fields[7])
                out.append((ipaddress.ip_network(f"{dest}/{mask}", strict=False), fields[0], int(fields[6])))
    for line in (read(os.path.join(PROC_NET, "ipv6_route")) or "").splitlines():
        fields = line.split()
        if len(fields) != 10:
            continue
        with contextlib.suppress(ValueError):
            flags = int(fields[8], 16)
            if flags & RTF_UP and not flags & RTF_REJECT:
                dest = ipaddress.ip_address(bytes.fromhex(fields[0]))
                network = ipaddress.ip_network(f"{dest}/{int(fields[1], 16)}", strict=False)
                out.append((network, fields[9], int(fields[5], 16)))
    return out


def route_problem(iface: str, peer, own: set, what: str) -> str | None:
    """None when the most specific route to ``peer`` (None: the default route) leaves by ``iface``; a loopback or
    own address is always routed (the kernel's local table, which /proc/net/route does not show)."""
    if peer is not None and (peer.is_loopback or peer in own):
        return None
    best = None
    for network, name, metric in routes():
        if peer is None:
            if network.prefixlen != 0:
                continue
        elif network.version != peer.version or peer not in network:
            continue
        rank = (network.prefixlen, -metric)
        # the most specific, then the lowest metric; of equal routes, the management interface's
        if best is None or rank > best[0] or (rank == best[0] and name == iface):
            best = (rank, name)
    if best is None:
        return f"no route to {what} ({PROC_NET}/route, {PROC_NET}/ipv6_route)"
    if best[1] != iface:
        return f"the route to {what} leaves by {best[1]}, not by the management interface {iface}"
    return None


def listening(port: int, addresses: list) -> bool:
    """A TCP socket in LISTEN on ``port``, on a wildcard address or one of ``addresses`` (/proc/net/tcp, tcp6)."""
    for name in ("tcp", "tcp6"):
        for line in (read(os.path.join(PROC_NET, name)) or "").splitlines()[1:]:
            fields = line.split()
            if len(fields) < 4 or fields[3] != TCP_LISTEN or ":" not in fields[1]:
                continue
            text, _sep, hex_port = fields[1].rpartition(":")
            try:
                if int(hex_port, 16) != port:
                    continue
                local = hex_address(text)
            except ValueError:
                continue
            mapped = getattr(local, "ipv4_mapped", None)
            if local.is_unspecified or local in addresses or (mapped is not None and mapped in addresses):
                return True
    return False


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
        if "management" in doc.get("checks", {}):
            check_management(doc["checks"]["management"])
    except (TypeError, ValueError) as exc:
        return {**doc, "boots": 0, "max_boots": 0}, f"pending record {path} invalid: {exc}"
    return doc, None


def trial_state(pending: dict) -> str | None:
    """None (no trial), "trial" (this boot carries the record's marker: the kexec trial of the managed entry) or
    "stock" (it does not: the device came back on the entry DEFAULT names)."""
    trial = pending.get("trial")
    if not isinstance(trial, dict) or not isinstance(trial.get("marker"), str) or not trial["marker"]:
        return None
    return "trial" if trial["marker"] in (read(CMDLINE) or "").split() else "stock"


def evaluate(path: str, cache: dict | None = None) -> tuple[dict, list[str], list[str]]:
    """(record, failures, notes) of one pending record; any error becomes a failure, i.e. a revert."""
    pending, error = read_pending(path)
    if error:
        return pending, [f"{error}; reverting to an existing non-managed entry"], []
    owed = pending.get("revert_required")
    if owed:  # an earlier boot decided to revert and could not write /boot: no second chance for the checks
        return pending, [f"a revert failed at an earlier boot ({owed}); retrying it"], []
    if trial_state(pending) == "stock":
        trial = pending["trial"]
        return (
            pending,
            [
                f"the trial boot of {trial.get('label')!r} did not come up: this boot's command line lacks "
                f"{trial['marker']}, so the device came back on the stock entry by itself (a kernel panic before "
                f"userspace reset by panic=, a watchdog reset or a power cycle)"
            ],
            [],
        )
    try:
        pending["boots"] += 1
        # Counted before anything else: a hang or a crash still uses up a boot. A read-only /var cannot count;
        # the checks (each with a timeout) still decide.
        try_write_json(path, pending)
        if pending["boots"] > pending["max_boots"]:
            return pending, [f"booted {pending['boots']} times without committing"], []
        failures, notes = checks(pending, cache)
        return pending, failures, notes
    except Exception as exc:
        log(traceback.format_exc())
        return pending, [f"checker error: {type(exc).__name__}: {exc}"], []


def labels_or_none(path: str) -> str | None:
    try:
        return labels(path)[1]
    except (OSError, ValueError):
        return None


def commit_trial(pending: dict, result: dict) -> str | None:
    """The trial boot passed: the managed entry becomes DEFAULT (atomic write, fsync, re-signed under Secure Boot).
    The error, or None."""
    path, label = pending["extlinux_path"], pending["trial"].get("label")
    try:
        if label not in labels(path)[0]:
            return f"the managed entry {label!r} is no longer in {path}"
        set_default(path, label)
    except Exception as exc:
        log(traceback.format_exc())
        return f"commit of DEFAULT {label} in {path} failed: {type(exc).__name__}: {exc}"
    if pending.get("sign_command"):
        error = sign(pending["sign_command"], path)
        if error:
            result["notes"] = [*result["notes"], error]
    result["trial"] = "passed"
    return None


def trial_failed(pending: dict, result: dict) -> bool:
    """The device is back on the stock entry: nothing to rewrite and no reboot when DEFAULT already names an entry
    other than the managed one; True when it does (then revert() puts DEFAULT back and reboots)."""
    path = pending["extlinux_path"]
    try:
        names, default = labels(path)
    except OSError as exc:
        result["notes"] = [*result["notes"], f"{path}: {exc}"]
        return True
    if default in names and default != pending["trial"].get("label"):
        result["status"] = "trial_failed"
        result["reverted_to"] = default
        result["trial"] = "failed"
        return False
    return True


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
    cache: dict = {}  # the records of this boot share one management path: waited for once
    records = [(path, *evaluate(path, cache)) for path in sorted(glob.glob(os.path.join(pending_dir, "*.json")))]
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
        state = trial_state(pending) if not pending.get("revert_required") else None
        if not failures and state == "trial":
            error = commit_trial(pending, result)
            if error:
                failures = [error]
                result["failures"] = failures
        if failures and state == "stock" and not trial_failed(pending, result):
            pass  # trial_failed: DEFAULT is the stock entry the device runs; the record is done
        elif failures:
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
