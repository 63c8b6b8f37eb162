"""The pieces of the engine module in module_utils: management link (/proc ancestry, ip), graphical sessions,
the adaptive settle, the journald drop-in."""

from __future__ import annotations

import json
import socket
import struct
from pathlib import Path

import pytest
from ansible_collections.edgeslim.jetson.plugins.module_utils import hostguards as hg
from ansible_collections.edgeslim.jetson.plugins.module_utils import journald_dropin as jd
from ansible_collections.edgeslim.jetson.plugins.module_utils.memsnap import settle


def proc(root: Path, pid: int, ppid: int, comm: str, env: dict[str, str] | None = None) -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    # the kernel's format: "pid (comm) state ppid pgrp session tty_nr ..."; comm may hold spaces and ')'
    (d / "stat").write_text(f"{pid} ({comm}) S {ppid} {pid} {ppid} 34816 {pid} 4194560 1073 0 0 0\n")
    if env is not None:
        (d / "environ").write_bytes(b"\0".join(f"{k}={v}".encode() for k, v in env.items()) + b"\0")


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("10.88.0.1 51234 10.88.0.5 22", "10.88.0.5"),
        ("::ffff:10.0.0.9 40000 ::ffff:10.0.0.5 22", "10.0.0.5"),
        ("fe80::1 40000 fe80::2%eth0 22", "fe80::2%eth0"),
        ("10.0.0.1 22", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_ssh_connection(value, address):
    assert hg.parse_ssh_connection(value) == address


def test_nearest_ancestor_with_ssh_connection(tmp_path):
    proc(tmp_path, 1, 0, "systemd", {})
    proc(tmp_path, 50, 1, "sshd: nvidia [priv]", {})
    proc(tmp_path, 60, 50, "bash", {"SSH_CONNECTION": "192.168.1.2 1 192.168.1.10 22"})
    proc(tmp_path, 70, 60, "sudo", {"SSH_CONNECTION": "10.0.0.1 2 10.0.0.5 22"})
    proc(tmp_path, 80, 70, "python3 (x)", {"HOME": "/root"})
    assert hg.ssh_connection(80, str(tmp_path)) == ("10.0.0.1 2 10.0.0.5 22", 70, "sudo")
    assert hg.parent_of(80, str(tmp_path)) == (70, "python3 (x)")


def test_no_ssh_connection_and_unreadable_environ(tmp_path):
    proc(tmp_path, 1, 0, "systemd", {"SSH_CONNECTION": "1.1.1.1 1 2.2.2.2 22"})  # PID 1 is never a session
    proc(tmp_path, 40, 1, "cron", None)  # environ unreadable (another user's process without root)
    proc(tmp_path, 41, 40, "python3", {"PATH": "/usr/bin"})
    assert hg.ssh_connection(41, str(tmp_path)) == ("1.1.1.1 1 2.2.2.2 22", 1, "systemd")
    (tmp_path / "1" / "environ").write_bytes(b"")
    assert hg.ssh_connection(41, str(tmp_path)) is None
    assert hg.ssh_connection(999, str(tmp_path)) is None


def test_interface_of_ip_output():
    out = (
        "3: wwp0s20f0u6i12    inet 10.64.1.7/30 brd 10.64.1.7 scope global wwp0s20f0u6i12\\"
        "       valid_lft forever preferred_lft forever\n"
    )
    assert hg.interface_of(out) == "wwp0s20f0u6i12"
    assert hg.interface_of("5: vlan10@eth0    inet 10.1.0.2/24 scope global vlan10\n") == "vlan10"
    assert hg.interface_of("") is None


class Module:
    def __init__(self, outputs: dict[str, tuple[int, str, str]]) -> None:
        self.outputs, self.calls = outputs, []

    def get_bin_path(self, name, required=False):
        return f"/usr/bin/{name}"

    def run_command(self, argv, **_kw):
        self.calls.append(argv)
        return self.outputs.get(argv[1], (1, "", "unknown"))


def test_management_link_override_and_zone(tmp_path, monkeypatch):
    assert hg.management_link(Module({}), "wwan0")["interface"] == "wwan0"
    proc(tmp_path, 1, 0, "systemd", {})
    proc(tmp_path, 9, 1, "python3", {"SSH_CONNECTION": "fe80::1 4 fe80::2%usb0 22"})
    monkeypatch.setattr(hg.os, "getpid", lambda: 9)
    link = hg.management_link(Module({}), None, str(tmp_path))
    assert link == {"address": "fe80::2", "interface": "usb0", "source": "SSH_CONNECTION of process 9 (python3)"}


def test_graphical_sessions_in_use():
    shown = (
        "Id=c1\nName=gdm\nType=wayland\nClass=greeter\nRemote=no\nActive=yes\nSeat=seat0\n\n"
        "Id=3\nName=nvidia\nType=tty\nClass=user\nRemote=yes\nActive=yes\nSeat=\n\n"
        "Id=c2\nName=nvidia\nType=x11\nClass=user\nRemote=no\nActive=yes\nSeat=seat0\n\n"
        "Id=c4\nName=kiosk\nType=wayland\nClass=user\nRemote=no\nActive=no\nSeat=seat0\n"
    )
    listing = "     c1  121 gdm    seat0 tty1\n      3 1000 nvidia\n     c2 1000 nvidia seat0 tty2\n"
    listing += "     c4 1001 kiosk seat0\n"
    module = Module({"list-sessions": (0, listing, ""), "show-session": (0, shown, "")})
    assert hg.graphical_sessions(module) == ["Id=c2 Name=nvidia Type=x11 Class=user Remote=no Active=yes Seat=seat0"]
    assert module.calls[1][-4:] == ["c1", "3", "c2", "c4"]
    assert hg.graphical_sessions(Module({"list-sessions": (1, "", "Failed to connect to bus")})) == []


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def readings(values):
    it = iter(values)
    return lambda: {"MemAvailable": next(it)}


def test_settle_stops_when_the_window_is_stable():
    clock = Clock()
    values = [1000, 90000, 147000, 150000, 151000, 151500, 999999]
    window, info = settle(readings(values), 30, 1.0, 2048, 3, sleep=clock.sleep, clock=lambda: clock.now)
    assert [r["MemAvailable"] for r in window] == [150000, 151000, 151500]
    assert info == {"reason": "stable", "seconds": 5.0, "readings": 6, "window_kb": 1500, "stable_kb": 2048,
                    "timeout": 30}  # fmt: skip


def test_settle_gives_up_at_the_timeout():
    clock = Clock()
    values = list(range(0, 10**7, 10000))
    window, info = settle(readings(values), 4, 1.0, 2048, 3, sleep=clock.sleep, clock=lambda: clock.now)
    assert info["reason"] == "timeout" and info["seconds"] == 4.0 and info["readings"] == 5
    assert [r["MemAvailable"] for r in window] == [20000, 30000, 40000]


def test_journald_dropin_render_and_restore(tmp_path):
    text = jd.render({"Storage": "volatile", "RuntimeMaxUse": "16M", "Compress": True})
    assert text.splitlines()[1:] == ["[Journal]", "Compress=yes", "RuntimeMaxUse=16M", "Storage=volatile"]
    path = str(tmp_path / "d" / "60-edgeslim.conf")
    jd.write(path, text)
    assert jd.current(path) == text
    assert jd.restore(path, "old\n") is True and jd.current(path) == "old\n"
    assert jd.restore(path, None) is True and jd.current(path) is None
    assert jd.restore(path, None) is False
    for bad in ({"storage": "x"}, {"Storage": ["x"]}, {"Storage=": "x"}):
        with pytest.raises(jd.DropinError):
            jd.render(bad)


ROUTE_HEADER = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"


def word(address: str) -> str:
    """An IPv4 address as /proc/net/route prints it: a 32-bit word in the host's byte order."""
    return f"{struct.unpack('=L', socket.inet_aton(address))[0]:08X}"


def route(iface: str, dest: str, gateway: str, flags: int, metric: int) -> str:
    return f"{iface}\t{word(dest)}\t{word(gateway)}\t{flags:04X}\t0\t0\t{metric}\t{word('0.0.0.0')}\t0\t0\t0\n"


def test_default_route_lowest_metric_then_ipv6(tmp_path):
    (tmp_path / "route").write_text(
        ROUTE_HEADER
        + route("wlan0", "0.0.0.0", "192.168.4.1", 0x3, 600)
        + route("eth0", "0.0.0.0", "10.88.0.1", 0x3, 100)
        + route("eth1", "0.0.0.0", "0.0.0.0", 0x201, 0)  # unreachable: never the path
    )
    assert hg.default_route(str(tmp_path)) == {"interface": "eth0", "gateway": "10.88.0.1"}
    (tmp_path / "route").write_text(ROUTE_HEADER + route("ppp0", "0.0.0.0", "0.0.0.0", 0x1, 0))
    assert hg.default_route(str(tmp_path)) == {"interface": "ppp0", "gateway": None}
    (tmp_path / "route").write_text(ROUTE_HEADER)
    (tmp_path / "ipv6_route").write_text(
        "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
        "00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n"
        "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
        "fd000000000000000000000000000001 00000400 00000001 00000000 00000003     eth0\n"
    )
    assert hg.default_route(str(tmp_path)) == {"interface": "eth0", "gateway": "fd00::1"}
    (tmp_path / "ipv6_route").write_text("")
    assert hg.default_route(str(tmp_path)) is None


class IpModule(Module):
    def run_command(self, argv, **_kw):
        self.calls.append(argv)
        if argv[1:3] == ["-j", "addr"]:
            return 0, json.dumps([{"ifname": argv[-1], "addr_info": [
                {"family": "inet", "local": "10.88.0.5", "scope": "global"},
                {"family": "inet6", "local": "fe80::5", "scope": "link"}]}]), ""  # fmt: skip
        return 0, "2: eth0    inet 10.88.0.5/16 scope global eth0\n", ""


def test_management_path_ssh_pull_and_none(tmp_path, monkeypatch):
    procs, net = tmp_path / "proc", tmp_path / "net"
    net.mkdir()
    proc(procs, 1, 0, "systemd", {})
    proc(procs, 9, 1, "sudo", {"SSH_CONNECTION": "::ffff:10.88.0.1 51234 ::ffff:10.88.0.5 2222"})
    monkeypatch.setattr(hg.os, "getpid", lambda: 9)
    assert hg.management_path(IpModule({}), None, str(procs), str(net)) == {
        "mode": "ssh", "interface": "eth0", "addresses": ["10.88.0.5"], "peer": "10.88.0.1",
        "peer_role": "controller", "ssh_port": 2222, "source": "SSH_CONNECTION of process 9 (sudo)",
    }  # fmt: skip
    (procs / "9" / "environ").write_bytes(b"USER=root\0")  # ansible-pull: no SSH
    (net / "route").write_text(ROUTE_HEADER + route("eth0", "0.0.0.0", "10.88.0.1", 0x3, 100))
    assert hg.management_path(IpModule({}), None, str(procs), str(net)) == {
        "mode": "pull", "interface": "eth0", "addresses": ["10.88.0.5"], "peer": "10.88.0.1", "peer_role": "gateway",
        "ssh_port": None, "source": "the default route (/proc/net/route, /proc/net/ipv6_route)",
    }  # fmt: skip
    # management_interface names another link than the default route's: no route to require on it
    other = hg.management_path(IpModule({}), "wwan0", str(procs), str(net))
    assert (other["interface"], other["peer"], other["peer_role"]) == ("wwan0", None, None)
    (net / "route").write_text(ROUTE_HEADER)
    assert "no default route" in hg.management_path(IpModule({}), None, str(procs), str(net))["skipped"]


def test_management_path_follows_the_ssh_address_not_the_override(tmp_path, monkeypatch):
    """management_interface protects carriers for the services layer; the checker needs where SSH arrives."""
    proc(tmp_path, 1, 0, "systemd", {})
    proc(tmp_path, 9, 1, "sudo", {"SSH_CONNECTION": "10.88.0.1 51234 10.88.0.5 22"})
    monkeypatch.setattr(hg.os, "getpid", lambda: 9)
    assert hg.management_path(IpModule({}), "wlan0", str(tmp_path), str(tmp_path))["interface"] == "eth0"
    unknown = Module({"-o": (0, "", "")})  # ip finds no interface for the address: the override is the best guess
    assert hg.management_path(unknown, "wlan0", str(tmp_path), str(tmp_path))["interface"] == "wlan0"
    assert "no interface carries it" in hg.management_path(unknown, None, str(tmp_path), str(tmp_path))["skipped"]
