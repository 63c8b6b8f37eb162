# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only facts the services layer checks before any change: the management link and local graphical sessions.

Management link: ``SSH_CONNECTION`` is ``client_ip client_port server_ip server_port`` and the server IP is the
address the controller reaches the device on. sudo (become) drops that variable from the module's environment, so
it is read from the nearest ancestor process that has it (``/proc/<pid>/environ``; root may read every process's
environ, and without become the module's own environment has it). The interface carrying that address comes from
``ip -o addr show to <address>``.

Management path (what the boot-commit checker requires at the first boot into a boot layer's change,
docs/reliability.md): with SSH, the interface above, the address the controller reached (``server_ip``), the
controller's address (``client_ip``) and the SSH port (``server_port``); without SSH (``ansible-pull``, a local
connection) the interface of the default route (``/proc/net/route``, else ``/proc/net/ipv6_route``), its global
addresses (``ip -j addr``) and the gateway.

Graphical session in use (decision in docs/services.md): logind reports an active, local (``Remote=no``) user
session (``Class=user``, not the greeter) of type x11, wayland or mir. A connected monitor alone does not count.
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
from typing import Any

from ansible_collections.edgeslim.jetson.plugins.module_utils.systemd_units import UnitsError, parse_show

PROC_ROOT = "/proc"
PROC_NET = "/proc/net"
RTF_UP, RTF_GATEWAY, RTF_REJECT = 0x0001, 0x0002, 0x0200
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


def unmapped(address: str) -> str:
    mapped = _V4_MAPPED.match(address)
    return mapped.group(1) if mapped else address


def default_route(proc_net: str | None = None) -> dict[str, Any] | None:
    """``{interface, gateway}`` of the default route with the lowest metric (IPv4 ``/proc/net/route``, else IPv6
    ``/proc/net/ipv6_route``; gateway None for a route without one), or None."""
    proc_net = proc_net or PROC_NET
    best: tuple[int, str, str | None] | None = None
    for line in (_read(os.path.join(proc_net, "route")) or "").splitlines()[1:]:
        fields = line.split()
        try:
            if len(fields) < 8 or int(fields[1], 16) or int(fields[7], 16):
                continue  # not 0.0.0.0/0
            flags, metric, gateway = int(fields[3], 16), int(fields[6]), int(fields[2], 16)
        except ValueError:
            continue
        if flags & RTF_UP and not flags & RTF_REJECT and (best is None or metric < best[0]):
            # the kernel prints the address as a 32-bit word in the host's byte order
            best = (metric, fields[0], socket.inet_ntoa(struct.pack("=L", gateway)) if flags & RTF_GATEWAY else None)
    if best is None:
        for line in (_read(os.path.join(proc_net, "ipv6_route")) or "").splitlines():
            fields = line.split()
            try:
                if len(fields) != 10 or int(fields[0], 16) or int(fields[1], 16):
                    continue  # not ::/0
                flags, metric, hop = int(fields[8], 16), int(fields[5], 16), int(fields[4], 16)
            except ValueError:
                continue
            if flags & RTF_UP and not flags & RTF_REJECT and (best is None or metric < best[0]):
                gateway = socket.inet_ntop(socket.AF_INET6, bytes.fromhex(fields[4])) if hop else None
                best = (metric, fields[9], gateway)
    return None if best is None else {"interface": best[1], "gateway": best[2]}


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return None


def global_addresses(module: Any, interface: str) -> list[str]:
    """The global-scope addresses of ``interface`` (``ip -j addr show dev``); none when ip is missing or fails."""
    ip = module.get_bin_path("ip")
    if not ip:
        return []
    rc, out, _err = module.run_command([ip, "-j", "addr", "show", "dev", interface])
    try:
        links = json.loads(out) if rc == 0 and out.strip() else []
    except ValueError:
        return []
    found = []
    for link in links if isinstance(links, list) else []:
        for info in link.get("addr_info") or [] if isinstance(link, dict) else []:
            if isinstance(info, dict) and info.get("scope") == "global" and isinstance(info.get("local"), str):
                found.append(info["local"])
    return found


def management_path(module: Any, override: str | None = None, proc_root: str | None = None,
                    proc_net: str | None = None) -> dict[str, Any]:  # fmt: skip
    """What the boot-commit checker requires at the first boot into a boot change (see the module docstring):
    ``{mode, interface, addresses, peer, peer_role, ssh_port, source}``, or ``{skipped: why}`` when this device has no
    network path to require."""
    found = ssh_connection(proc_root=proc_root)
    if found is not None:
        value, pid, comm = found
        client, _cport, server, port = value.split()
        server, _sep, zone = unmapped(server).partition("%")
        # the interface that carries the SSH address (what the controller reaches); management_interface only
        # when that cannot be found
        link = management_link(module, None, proc_root) or {}
        interface = zone or link.get("interface") or override
        if not interface:
            return {"skipped": f"the SSH connection arrives on {server}, but no interface carries it "
                               f"(ip -o addr show to {server}): the path cannot be checked"}  # fmt: skip
        return {"mode": "ssh", "interface": interface, "addresses": [server],
                "peer": unmapped(client).partition("%")[0], "peer_role": "controller",
                "ssh_port": int(port) if port.isdigit() else None,
                "source": f"SSH_CONNECTION of process {pid} ({comm})"}  # fmt: skip
    route = default_route(proc_net)
    interface = override or (route or {}).get("interface")
    if not interface:
        return {"skipped": "no SSH connection (ansible-pull or a local connection) and no default route at arm "
                           "time: no network path to check"}  # fmt: skip
    on_it = bool(route) and route["interface"] == interface
    gateway = route["gateway"] if on_it else None
    # the gateway when there is one; else the default route itself (a point-to-point link); no route requirement
    # when management_interface names another interface than the default route's
    role = "gateway" if gateway else "default route" if on_it else None
    source = "management_interface" if override else "the default route (/proc/net/route, /proc/net/ipv6_route)"
    return {"mode": "pull", "interface": interface, "addresses": global_addresses(module, interface),
            "peer": gateway, "peer_role": role, "ssh_port": None, "source": source}  # fmt: skip


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
