# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only facts the services layer checks before any change: the management link and local graphical sessions.

Management link: ``SSH_CONNECTION`` is ``client_ip client_port server_ip server_port`` and the server IP is the
address the controller reaches the device on. sudo (become) drops that variable from the module's environment, so
it is read from the nearest ancestor process that has it (``/proc/<pid>/environ``; root may read every process's
environ, and without become the module's own environment has it). The interface carrying that address comes from
``ip -o addr show to <address>``.

Graphical session in use (decision in docs/services.md): logind reports an active, local (``Remote=no``) user
session (``Class=user``, not the greeter) of type x11, wayland or mir. A connected monitor alone does not count.
"""

from __future__ import annotations

import os
import re
from typing import Any

from ansible_collections.edgeslim.jetson.plugins.module_utils.systemd_units import UnitsError, parse_show

PROC_ROOT = "/proc"
MAX_ANCESTORS = 64
SESSION_PROPERTIES = ("Id", "Name", "Type", "Class", "Remote", "Active", "Seat")
GRAPHICAL_TYPES = ("x11", "wayland", "mir")
_V4_MAPPED = re.compile(r"^::ffff:(\d+\.\d+\.\d+\.\d+)$", re.IGNORECASE)


def parse_ssh_connection(value: str | None) -> str | None:
    """The server address of an ``SSH_CONNECTION`` value (IPv4-mapped IPv6 as IPv4), or None."""
    fields = (value or "").split()
    if len(fields) != 4:
        return None
    address = fields[2]
    mapped = _V4_MAPPED.match(address)
    return mapped.group(1) if mapped else address


def environ_var(pid: int, name: str, proc_root: str = PROC_ROOT) -> str | None:
    """``name`` from a process's initial environment; None when unset or unreadable (exited, other user)."""
    try:
        with open(os.path.join(proc_root, str(pid), "environ"), "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    prefix = name.encode() + b"="
    for item in data.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode("utf-8", "replace")
    return None


def parent_of(pid: int, proc_root: str = PROC_ROOT) -> tuple[int | None, str]:
    """``(ppid, comm)`` from ``/proc/<pid>/stat`` (comm may hold spaces and parentheses: split at the last ')')."""
    try:
        with open(os.path.join(proc_root, str(pid), "stat"), encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return None, ""
    head, sep, tail = text.rpartition(")")
    fields = tail.split()
    if not sep or len(fields) < 2 or not fields[1].isdigit():
        return None, ""
    return int(fields[1]), head.partition("(")[2]


def ssh_connection(pid: int | None = None, proc_root: str | None = None) -> tuple[str, int, str] | None:
    """``(SSH_CONNECTION, pid, comm)`` of this process or its nearest ancestor that has it; None when none has."""
    pid = os.getpid() if pid is None else pid
    proc_root = proc_root or PROC_ROOT
    for _depth in range(MAX_ANCESTORS):
        if pid is None or pid < 1:
            return None
        value = environ_var(pid, "SSH_CONNECTION", proc_root)
        ppid, comm = parent_of(pid, proc_root)
        if value and parse_ssh_connection(value):
            return value, pid, comm
        if pid == 1:
            return None
        pid = ppid
    return None


def interface_of(ip_output: str) -> str | None:
    """The interface of the first line of ``ip -o addr show to <address>`` (``2: eth0    inet 10.0.0.5/24 ...``)."""
    for line in ip_output.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].endswith(":"):
            return fields[1].split("@", 1)[0]
    return None


def management_link(module: Any, override: str | None = None, proc_root: str | None = None) -> dict[str, Any] | None:
    """``{address, interface, source}`` of the link the controller reaches this host on, or None (no SSH)."""
    if override:
        return {"address": None, "interface": override, "source": "management_interface"}
    found = ssh_connection(proc_root=proc_root)
    if found is None:
        return None
    value, pid, comm = found
    address = parse_ssh_connection(value)
    source = f"SSH_CONNECTION of process {pid} ({comm})"
    if address and "%" in address:  # link-local IPv6 with its zone: the zone is the interface
        address, _sep, zone = address.partition("%")
        return {"address": address, "interface": zone, "source": source}
    ip = module.get_bin_path("ip")
    interface = None
    if ip:
        rc, out, _err = module.run_command([ip, "-o", "addr", "show", "to", address])
        interface = interface_of(out) if rc == 0 else None
    return {"address": address, "interface": interface, "source": source}


def in_use(session: dict[str, str]) -> bool:
    return (
        session.get("Type") in GRAPHICAL_TYPES
        and session.get("Class") == "user"
        and session.get("Remote") == "no"
        and session.get("Active") == "yes"
    )


def describe(session: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in session.items())


def graphical_sessions(module: Any) -> list[str]:
    """The local graphical user sessions in use, each as ``Id=c2 Name=nvidia Type=x11 ...``; none without logind."""
    loginctl = module.get_bin_path("loginctl")
    if not loginctl:
        return []
    rc, out, _err = module.run_command([loginctl, "list-sessions", "--no-legend"])
    ids = [line.split()[0] for line in out.splitlines() if line.strip()] if rc == 0 else []
    if not ids:
        return []
    argv = [loginctl, "show-session"]
    for prop in SESSION_PROPERTIES:
        argv += ["-p", prop]
    # rc is not checked: a session can end between the two calls; what was printed for the others still counts
    _rc, out, _err = module.run_command(argv + ids)
    try:
        sessions = parse_show(out)
    except UnitsError:
        return []
    return [describe(s) for s in sessions if in_use(s)]
