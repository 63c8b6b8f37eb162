"""The boot-time checker's management check: the path the controller reached the device on at arm time must be back
(interface up with its address, a route to the controller, a listener on the SSH port) within a deadline, read from
fake /sys/class/net and /proc/net trees in the kernel's formats and a stand-in for ``ip -j addr``; no real waiting
(an injected clock)."""

from __future__ import annotations

import importlib.util
import json
import re
import socket
import struct
import sys
from pathlib import Path

import pytest

CHECKER = Path(__file__).resolve().parents[3] / "roles/boot_commit/files/edgeslim-boot-commit.py"
PATH = {"mode": "ssh", "interface": "eth0", "addresses": ["10.88.0.5"], "peer": "10.88.0.1",
        "peer_role": "controller", "ssh_port": 22, "source": "SSH_CONNECTION of process 812 (sudo)",
        "wait": 60}  # fmt: skip
ROUTE_HEADER = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\t\t\n"
TCP_HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"


def word(address: str) -> str:
    """An IPv4 address as /proc/net/route and /proc/net/tcp print it: one 32-bit word in the host's byte order."""
    return f"{struct.unpack('=L', socket.inet_aton(address))[0]:08X}"


def route(iface: str, dest: str, gateway: str, mask: str, flags: int = 0x1, metric: int = 0) -> str:
    return f"{iface}\t{word(dest)}\t{word(gateway)}\t{flags:04X}\t0\t0\t{metric}\t{word(mask)}\t0\t0\t0\n"


def tcp(sl: int, local: str, port: int, remote: str, rport: int, state: str) -> str:
    return (f"{sl:4d}: {word(local)}:{port:04X} {word(remote)}:{rport:04X} {state} 00000000:00000000 00:00000000 "
            "00000000     0        0 23456 1 0000000000000000 100 0 0 10 0\n")  # fmt: skip


IP_ADDR = [{"ifindex": 2, "ifname": "eth0", "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"], "mtu": 1500,
            "operstate": "UP", "addr_info": [{"family": "inet", "local": "10.88.0.5", "prefixlen": 16,
                                              "scope": "global", "label": "eth0"}]}]  # fmt: skip


class Net:
    """/sys/class/net, /proc/net and ``ip`` of a device whose management path is all there."""

    def __init__(self, root: Path) -> None:
        self.sys, self.proc = root / "sys/class/net", root / "proc/net"
        self.link("eth0", "up", "0x1003", "1")
        self.link("lo", "unknown", "0x9", "1")
        self.proc.mkdir(parents=True)
        (self.proc / "route").write_text(
            ROUTE_HEADER
            + route("eth0", "0.0.0.0", "10.88.0.1", "0.0.0.0", flags=0x3, metric=100)
            + route("eth0", "10.88.0.0", "0.0.0.0", "255.255.0.0", metric=100)
        )
        (self.proc / "tcp").write_text(
            TCP_HEADER
            + tcp(0, "127.0.0.53", 53, "0.0.0.0", 0, "0A")
            + tcp(1, "0.0.0.0", 22, "0.0.0.0", 0, "0A")
            + tcp(2, "10.88.0.5", 22, "10.88.0.1", 51234, "01")
        )
        (self.proc / "tcp6").write_text(TCP_HEADER)
        (self.proc / "if_inet6").write_text("00000000000000000000000000000001 01 80 10 80       lo\n")
        (self.proc / "ipv6_route").write_text(
            "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
            "00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n"
        )
        self.ip = root / "ip"
        self.ip.write_text(
            '#!/bin/sh\n# ip -j addr show dev IFACE\nf="$(dirname "$0")/ip-addr-$5.json"\n'
            '[ -f "$f" ] || { echo "Device \\"$5\\" does not exist." >&2; exit 1; }\ncat "$f"\n'
        )
        self.ip.chmod(0o755)
        self.addresses(IP_ADDR)

    def link(self, name: str, operstate: str, flags: str, carrier: str) -> None:
        d = self.sys / name
        d.mkdir(parents=True, exist_ok=True)
        for key, value in (("operstate", operstate), ("flags", flags), ("carrier", carrier)):
            (d / key).write_text(value + "\n")

    def addresses(self, doc: list) -> None:
        (self.ip.parent / "ip-addr-eth0.json").write_text(json.dumps(doc))

    def drop(self, name: str, pattern: str) -> None:
        """Remove the lines of /proc/net/<name> that match."""
        path = self.proc / name
        path.write_text("".join(line for line in path.read_text().splitlines(True) if not re.search(pattern, line)))


class Clock:
    """CLOCK and SLEEP for the checker: sleeping advances the clock; ``at`` runs a change when its time comes."""

    def __init__(self) -> None:
        self.now, self.sleeps, self.at = 1000.0, [], {}

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds
        for when in sorted(t for t in self.at if t <= self.now - 1000.0):
            self.at.pop(when)()


@pytest.fixture
def checker():
    spec = importlib.util.spec_from_file_location("edgeslim_boot_commit_mgmt", CHECKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def net(tmp_path, checker, monkeypatch) -> Net:
    n = Net(tmp_path)
    monkeypatch.setattr(checker, "SYS_NET", str(n.sys))
    monkeypatch.setattr(checker, "PROC_NET", str(n.proc))
    monkeypatch.setattr(checker, "IP", str(n.ip))
    return n


@pytest.fixture
def clock(checker, monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(checker, "CLOCK", c)
    monkeypatch.setattr(checker, "SLEEP", c.sleep)
    return c


def test_the_whole_path_is_there(checker, net, clock):
    assert checker.management(PATH) == ([], [])
    assert clock.sleeps == []  # no waiting when it is all there


@pytest.mark.parametrize(
    ("break_it", "failure"),
    [
        (lambda n: n.link("eth0", "down", "0x1002", "0"), "management interface eth0 is not up (operstate down)"),
        (lambda n: n.link("eth0", "lowerlayerdown", "0x1003", "0"),
         "management interface eth0 is not up (operstate lowerlayerdown)"),
        (lambda n: n.link("eth0", "unknown", "0x1002", "0"), "management interface eth0 is not up (operstate unknown)"),
        (lambda n: __import__("shutil").rmtree(n.sys / "eth0"), "management interface eth0 is missing ({sys}/eth0 "
                                                                "does not exist)"),
        (lambda n: n.addresses([{**IP_ADDR[0], "addr_info": [{"family": "inet", "local": "10.88.0.9"}]}]),
         "management address 10.88.0.5 is not on eth0 (it has 10.88.0.9)"),
        (lambda n: n.addresses([{**IP_ADDR[0], "addr_info": []}]),
         "management address 10.88.0.5 is not on eth0 (it has none)"),
        (lambda n: (n.ip.parent / "ip-addr-eth0.json").unlink(),
         "management address 10.88.0.5 on eth0 not readable: {ip} -j addr failed (rc 1): Device \"eth0\" does not "
         "exist."),
        (lambda n: n.drop("route", r"^eth0"), "no route to the controller 10.88.0.1 ({proc}/route, "
                                              "{proc}/ipv6_route)"),
        (lambda n: (n.drop("route", r"^eth0"), (n.proc / "route").write_text(
            (n.proc / "route").read_text() + route("wlan0", "0.0.0.0", "192.168.4.1", "0.0.0.0", flags=0x3))),
         "the route to the controller 10.88.0.1 leaves by wlan0, not by the management interface eth0"),
        (lambda n: n.drop("tcp", r" 0A "),
         "nothing listens on TCP port 22 (the SSH port the controller used) on 10.88.0.5"),
        (lambda n: (n.proc / "tcp").write_text(TCP_HEADER + tcp(0, "127.0.0.1", 22, "0.0.0.0", 0, "0A")),
         "nothing listens on TCP port 22 (the SSH port the controller used) on 10.88.0.5"),
    ],
    ids=["down", "lower-layer-down", "unknown-not-up", "gone", "address-changed", "no-address", "ip-fails",
         "no-route", "route-elsewhere", "no-listener", "loopback-only-listener"],
)  # fmt: skip
def test_a_missing_part_fails_at_the_deadline_and_says_what(checker, net, clock, break_it, failure):
    break_it(net)
    failures, notes = checker.management(PATH)
    expected = failure.format(sys=net.sys, proc=net.proc, ip=net.ip)
    assert failures == [f"{expected} (waited 60 s)"] and notes == []
    # the deadline: polled once a second for the 60 s recorded, never beyond
    assert clock.now - 1000.0 == 60 and len(clock.sleeps) == 60


def test_the_link_may_take_seconds_to_come_up(checker, net, clock):
    net.link("eth0", "down", "0x1002", "0")
    net.addresses([{**IP_ADDR[0], "addr_info": []}])
    clock.at[4] = lambda: net.link("eth0", "up", "0x1003", "1")
    clock.at[7] = lambda: net.addresses(IP_ADDR)  # DHCP answers after the carrier
    assert checker.management(PATH) == ([], [])
    assert clock.now - 1000.0 == 7


def test_the_recorded_wait_is_the_deadline(checker, net, clock):
    net.link("eth0", "down", "0x1002", "0")
    failures, _notes = checker.management({**PATH, "wait": 2.5})
    assert failures == ["management interface eth0 is not up (operstate down) (waited 2.5 s)"]
    assert clock.sleeps == [1.0, 1.0, 0.5]


def test_ipv6_and_a_listener_on_the_wildcard_of_tcp6(checker, net, clock):
    """IPv6 from /proc/net/if_inet6 and ipv6_route (network byte order), tcp6 words in host order."""
    (net.proc / "if_inet6").write_text(
        "00000000000000000000000000000001 01 80 10 80       lo\nfd000000000000000000000000000005 02 40 00 80     eth0\n"
    )
    (net.proc / "ipv6_route").write_text(
        "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 "
        "00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n"
    )
    (net.proc / "tcp").write_text(TCP_HEADER)
    (net.proc / "tcp6").write_text(TCP_HEADER + "   0: 00000000000000000000000000000000:0016 "
                                   "00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 "
                                   "00000000     0        0 577 1 0000000000000000 100 0 0 10 0\n")  # fmt: skip
    net.addresses([{**IP_ADDR[0], "addr_info": []}])
    v6 = {**PATH, "addresses": ["fd00::5"], "peer": "fd00::1"}
    assert checker.management(v6) == ([], [])
    (net.proc / "ipv6_route").write_text("")
    assert checker.management(v6)[0] == [
        f"no route to the controller fd00::1 ({net.proc}/route, {net.proc}/ipv6_route) (waited 60 s)"
    ]


@pytest.mark.skipif(sys.byteorder != "little", reason="the literal is a little-endian host's /proc/net/route")
def test_proc_net_words_are_in_host_byte_order(checker):
    # eth0 00000000 010200C0 0003 ...: a default route via 192.0.2.1, as a little-endian kernel prints it
    assert str(checker.hex_address("010200C0")) == "192.0.2.1"
    assert str(checker.hex_address("0100007F")) == "127.0.0.1"


def test_pull_mode_checks_the_gateway_and_notes_the_listener(checker, net, clock):
    pull = {"mode": "pull", "interface": "eth0", "addresses": ["10.88.0.5"], "peer": "10.88.0.1",
            "peer_role": "gateway", "ssh_port": None, "wait": 60}  # fmt: skip
    net.drop("tcp", r" 0A ")  # no sshd: not required without an SSH port
    assert checker.management(pull) == ([], ["management check: no SSH port recorded (pull mode), listener not "
                                             "checked"])  # fmt: skip
    net.drop("route", r"^eth0")
    assert checker.management(pull)[0] == [
        f"no route to the gateway 10.88.0.1 ({net.proc}/route, {net.proc}/ipv6_route) (waited 60 s)"
    ]
    point_to_point = {**pull, "peer": None, "peer_role": "default route"}
    assert checker.management(point_to_point)[0] == [
        f"no route to the default destination ({net.proc}/route, {net.proc}/ipv6_route) (waited 60 s)"
    ]


@pytest.mark.parametrize(
    ("spec", "note"),
    [
        (False, "management check switched off at arm time (boot.checks.<layer>.management: false)"),
        ({"skipped": "no SSH connection (ansible-pull or a local connection) and no default route at arm time: no "
                     "network path to check"},
         "management check skipped: no SSH connection (ansible-pull or a local connection) and no default route at "
         "arm time: no network path to check"),
    ],
)  # fmt: skip
def test_switched_off_or_nothing_recorded_is_a_note_not_a_failure(checker, net, clock, spec, note):
    net.link("eth0", "down", "0x1002", "0")
    assert checker.management(spec) == ([], [note])
    assert clock.sleeps == [] and "container" not in note  # "container" in a note would read as unverified


def _record(pending: Path, extlinux: Path, layer: str, checks: dict) -> None:
    doc = {"layer": layer, "extlinux_path": str(extlinux), "previous_default": "primary", "boots": 0,
           "max_boots": 3, "checks": checks}  # fmt: skip
    (pending / f"{layer}.json").write_text(json.dumps(doc))


@pytest.fixture
def boot(tmp_path, checker, monkeypatch):
    monkeypatch.setattr(checker, "in_container", lambda: False)
    extlinux = tmp_path / "extlinux.conf"
    extlinux.write_text("TIMEOUT 30\nDEFAULT edgeslim\n\nLABEL primary\n      LINUX /boot/Image\n\n"
                        "LABEL edgeslim\n      LINUX /boot/Image\n")  # fmt: skip
    (tmp_path / "pending").mkdir()
    return extlinux, tmp_path / "pending", tmp_path / "results"


@pytest.mark.parametrize("protection", ["management check", "removed from the record", "removed from the checker"])
def test_a_change_that_kills_the_network_is_reverted_not_committed(checker, net, clock, boot, protection, monkeypatch):
    """Both boot layers booted into an entry whose change took the NIC down. With the check the device reverts by
    itself (waiting once for the shared path, not once per layer); without it -- the protection removed -- the same
    boot commits and the device stays unreachable: this test fails if the check is taken out."""
    extlinux, pending, results = boot
    net.link("eth0", "down", "0x1002", "0")
    for layer in ("swiotlb", "carveouts"):
        checks = {"units_active": [], "command": "true"}
        if protection != "removed from the record":
            checks["management"] = PATH
        _record(pending, extlinux, layer, checks)
    if protection == "removed from the checker":
        monkeypatch.setattr(checker, "management", lambda _spec: ([], []))
    reboot = checker.process(str(pending), str(results))
    verdicts = {p.stem: json.loads(p.read_text()) for p in results.glob("*.json")}
    if protection != "management check":
        assert reboot is False and {v["status"] for v in verdicts.values()} == {"committed"}
        return
    assert reboot is True and "DEFAULT primary" in extlinux.read_text()
    assert verdicts["carveouts"]["status"] == verdicts["swiotlb"]["status"] == "reverted"
    assert verdicts["swiotlb"]["failures"] == ["management interface eth0 is not up (operstate down) (waited 60 s)"]
    assert clock.now - 1000.0 == 60  # one wait for the boot's shared path


@pytest.mark.parametrize(
    ("management", "reason"),
    [
        (True, "checks.management must be false or an object"),
        ({"interface": "", "addresses": []}, "checks.management.interface must name an interface"),
        ({**PATH, "addresses": ["10.88.0.500"]}, "10.88.0.500"),
        ({**PATH, "addresses": [5]}, "address 5 is not a string"),
        ({**PATH, "wait": 0}, "checks.management.wait must be more than 0 and at most 180 s"),
        ({**PATH, "wait": 3600}, "checks.management.wait must be more than 0 and at most 180 s"),
        ({**PATH, "ssh_port": "22"}, "checks.management.ssh_port is '22'"),
        ({**PATH, "ssh_port": 70000}, "checks.management.ssh_port is 70000"),
    ],
)  # fmt: skip
def test_a_bad_management_record_is_never_committed(checker, net, clock, boot, management, reason):
    extlinux, pending, results = boot
    _record(pending, extlinux, "swiotlb", {"management": management})
    assert checker.process(str(pending), str(results)) is True
    verdict = json.loads((results / "swiotlb.json").read_text())
    assert verdict["status"] == "reverted" and reason in verdict["failures"][0], verdict["failures"]


def test_the_unit_outlasts_the_management_wait(checker):
    """systemd must not kill the checker mid-revert: TimeoutStartSec covers the longest management wait (once per
    boot) plus the engine's own check commands of both boot layers at their default timeout (container detection
    per record, dmesg for swiotlb) and the signing hook of a revert."""
    unit = (CHECKER.parent / "edgeslim-boot-commit.service").read_text()
    minutes = int(re.search(r"^TimeoutStartSec=(\d+)min$", unit, re.M).group(1))
    budget = checker.MANAGEMENT_WAIT_MAX + checker.IP_TIMEOUT + (2 + 1 + 1) * checker.CHECK_TIMEOUT
    assert budget <= minutes * 60
    assert checker.MANAGEMENT_WAIT <= checker.MANAGEMENT_WAIT_MAX
