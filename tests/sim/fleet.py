"""Bring up, list and tear down fleets of simulated Jetsons (systemd containers reachable over SSH).

    python tests/sim/fleet.py up --spec tests/sim/fleets/demo.yml
    python tests/sim/fleet.py up --count 20 --variant orin-nano-8gb --group warehouse-robots
    python tests/sim/fleet.py status
    python tests/sim/fleet.py down            # this fleet's containers only (--fleet NAME, default from the spec)

Each host is a container of the image built by build_image.py with: its own memory limit, seen as MemTotal
through lxcfs; the variant's device tree at /sys/firmware/devicetree/base; sshd published on a distinct
127.0.0.1 port; `--restart=always` so an in-guest reboot comes back, through the simulated boot
(boot_standin.py): each start accounts the device's own DEFAULT extlinux entry (SWIOTLB pool, booted device tree and
its carve-outs) into MemTotal and rewrites the host's live device tree. The Ansible inventory is written to
inventories/sim/hosts.yml (or --inventory). See docs/development.md and docs/testing.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
import build_image
import dtb2fs

CACHE = HERE / "cache"
# Per-container live device trees (rewritten by the simulated boot at every start of the container).
LIVE_DT = CACHE / "dt-live"
BOOT_STANDIN = HERE / "boot_standin.py"
# Installed by testbed.sh (`make host`), found through containers.conf's hooks_dir.
BOOT_HOOK = Path("/var/lib/edgeslim-sim/hooks.d/edgeslim-sim-boot.json")
KEY = CACHE / "ssh" / "id_ed25519"
LXCFS_MEMINFO = Path("/var/lib/lxcfs/proc/meminfo")
DEFAULT_INVENTORY = ROOT / "inventories" / "sim" / "hosts.yml"
LABEL = "edgeslim.fleet"
BASE_PORT = 22100
# Container identity of a boot: a container shares the host's boot_id, but PID 1's start time (field 22 of
# /proc/1/stat) changes at every restart (TESTBED.md). Real devices keep the default (kernel boot_id).
BOOT_ID_ARGV = ["awk", "{print $22}", "/proc/1/stat"]
BOOT_TIME_COMMAND = "awk '{print $22}' /proc/1/stat"
SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=3"]  # fmt: skip


def log(msg: str) -> None:
    print(f"fleet: {msg}", flush=True)


def podman(*args: str, check: bool = True, capture: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], check=check, text=True, capture_output=capture)


def variants() -> dict[str, dict[str, Any]]:
    out = {}
    for vdir in sorted((HERE / "variants").iterdir()):
        if (vdir / "variant.yml").exists():
            v = yaml.safe_load((vdir / "variant.yml").read_text())
            v["dir"] = vdir
            out[v["name"]] = v
    return out


def python_interpreter(variant: dict[str, Any]) -> str:
    """/usr/bin/python3.X of the variant's JetPack release (the image carries each release's interpreter)."""
    return f"/usr/bin/python{variant['python']}"


def host_ram_mib() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


def expected_memtotal_mib(variant: dict[str, Any]) -> int:
    """lxcfs reports min(cgroup limit, host RAM): a 64 GB module on a 24 GB host shows the host's RAM."""
    return min(int(variant["ram_mb"]), host_ram_mib())


def ensure_prereqs(n_hosts: int) -> None:
    try:
        LXCFS_MEMINFO.stat()
    except OSError as exc:  # missing, or ENOTCONN: the FUSE mount outlived a killed lxcfs
        sys.exit(f"fleet: {LXCFS_MEMINFO}: {exc.strerror}: lxcfs is not serving (run `make host`)")
    need = 128 + 8 * n_hosts  # ~6 inotify instances per systemd container, plus the host's own
    cur = int(Path("/proc/sys/fs/inotify/max_user_instances").read_text())
    if cur < need:
        try:
            Path("/proc/sys/fs/inotify/max_user_instances").write_text(str(need))
            log(f"fs.inotify.max_user_instances {cur} -> {need}")
        except OSError as exc:
            sys.exit(f"fleet: fs.inotify.max_user_instances is {cur}, {n_hosts} hosts need {need} ({exc})")
    if not BOOT_HOOK.exists():
        sys.exit(f"fleet: {BOOT_HOOK} is missing: the simulated boot is not installed (run `make host`)")
    ensure_ssh_key()


def ensure_ssh_key() -> None:
    """The simulated fleet's SSH key (devices authorize its .pub): made once per checkout, never printed."""
    if not KEY.exists():
        KEY.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgeslim-sim", "-f", str(KEY)],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip


def device_tree_dir(variant: dict[str, Any]) -> Path:
    """The variant's DT in the kernel's fs layout, built from the same DTS as the image's /boot/dtb file."""
    out = CACHE / "dt" / f"{variant['name']}-{build_image.recipe_hash()}"
    if not out.exists():
        dtb = CACHE / "dt" / f"{variant['name']}.dtb"
        dtb.parent.mkdir(parents=True, exist_ok=True)
        build_image.compile_dts(variant["dir"] / "board.dts", dtb)
        dtb2fs.unpack(dtb.read_bytes(), out)
    return out


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def used_ports() -> set[int]:
    res = podman("ps", "-a", "--filter", f"label={LABEL}", "--format", "{{.Labels}}", check=False)
    ports = set()
    for line in res.stdout.splitlines():
        for item in line.strip("map[]").split():
            if item.startswith("edgeslim.port:"):
                ports.add(int(item.split(":", 1)[1]))
    return ports


def allocate_ports(n: int) -> list[int]:
    taken, ports, port = used_ports(), [], BASE_PORT
    while len(ports) < n:
        if port not in taken and port_free(port):
            ports.append(port)
        port += 1
    return ports


def container_name(fleet: str, host: str) -> str:
    return f"es-{fleet}-{host}"


def live_device_tree(name: str, stock: Path) -> Path:
    """A fresh copy of the variant's tree for one container: the simulated boot rewrites it at every start."""
    live = LIVE_DT / name
    shutil.rmtree(live, ignore_errors=True)
    shutil.copytree(stock, live)
    return live


def boot_annotations(stock: Path, live: Path | None = None) -> list[str]:
    """podman arguments that enable the simulated boot (boot_standin.py) for a container."""
    args = ["--annotation", f"io.edgeslim.sim.boot={BOOT_STANDIN}",
            "--annotation", f"io.edgeslim.sim.firmware-dt={stock}"]  # fmt: skip
    return args + (["--annotation", f"io.edgeslim.sim.live-dt={live}"] if live else [])


def run_host(fleet: str, host: dict[str, Any], port: int, image: str, scale: str) -> str:
    v = variants()[host["variant"]]
    name = container_name(fleet, host["name"])
    podman("rm", "-f", "-t", "0", name, check=False)
    stock = device_tree_dir(v)
    live = live_device_tree(name, stock)
    argv = [
        "run", "-d", "--name", name, "--hostname", host["name"], "--systemd=always", "--restart=always",
        "--label", f"{LABEL}={fleet}", "--label", f"edgeslim.port={port}",
        "--label", f"edgeslim.group={host['group']}", "--label", f"edgeslim.variant={v['name']}",
        # Root on a device can read every process's smaps (per-unit PSS); container root needs SYS_PTRACE for it.
        "--cap-add", "SYS_PTRACE",
        "--memory", f"{v['ram_mb']}m",
        "-v", f"{LXCFS_MEMINFO}:/proc/meminfo:rw",
        "--security-opt", "unmask=/sys/firmware", "--tmpfs", "/sys/firmware:ro",
        "-v", f"{live}:/sys/firmware/devicetree/base:ro", *boot_annotations(stock, live),
        "-v", f"{KEY}.pub:/etc/ssh/edgeslim_authorized_keys:ro",
        "-e", f"EDGESLIM_SIM_VARIANT={v['name']}", "-e", f"EDGESLIM_SIM_SCALE={scale}",
        "-p", f"127.0.0.1:{port}:22",
        *host.get("podman_args", []),
        image,
    ]  # fmt: skip
    podman(*argv)
    return name


def ssh_ok(port: int) -> bool:
    res = subprocess.run(["ssh", *SSH_OPTS, "-i", str(KEY), "-p", str(port), "nvidia@127.0.0.1",
                          "systemctl is-system-running --wait >/dev/null 2>&1; sudo -n true"],
                         check=False, capture_output=True, timeout=120)  # fmt: skip
    return res.returncode == 0


def wait_ready(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ssh_ok(port):
                return True
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.5)
    return False


def fleet_hosts(fleet: str | None) -> list[dict[str, Any]]:
    args = ["ps", "-a", "--format", "json"]
    args += ["--filter", f"label={LABEL}={fleet}"] if fleet else ["--filter", f"label={LABEL}"]
    rows = json.loads(podman(*args).stdout or "[]")
    hosts = []
    for row in rows:
        labels = row.get("Labels") or {}
        hosts.append({
            "container": row["Names"][0], "name": row["Names"][0].split("-", 2)[2], "fleet": labels.get(LABEL),
            "group": labels.get("edgeslim.group"), "variant": labels.get("edgeslim.variant"),
            "port": int(labels.get("edgeslim.port", 0)), "state": row.get("State"),
        })  # fmt: skip
    return sorted(hosts, key=lambda h: h["name"])


def write_inventory(fleet: str, path: Path) -> None:
    vs = variants()
    groups: dict[str, dict[str, Any]] = {}
    for h in fleet_hosts(fleet):
        groups.setdefault(h["group"], {"hosts": {}})["hosts"][h["name"]] = {
            "ansible_host": "127.0.0.1",
            "ansible_port": h["port"],
            "edgeslim_sim_container": h["container"],
            "edgeslim_sim_variant": h["variant"],
            "edgeslim_sim_memtotal_mib": expected_memtotal_mib(vs[h["variant"]]),
            # The release's own Python, as Ansible finds it on a real device of that JetPack.
            "ansible_python_interpreter": python_interpreter(vs[h["variant"]]),
            **vs[h["variant"]].get("inventory_vars", {}),
        }
    inv = {
        "all": {
            "vars": {
                "ansible_user": "nvidia",
                "ansible_become": True,
                "ansible_ssh_private_key_file": str(KEY),
                "edgeslim_sim_fleet": fleet,
                "edgeslim_boot_id_command": BOOT_ID_ARGV,
                "edgeslim_boot_time_command": BOOT_TIME_COMMAND,
                # The simulated boot accounts the booted entry into MemTotal: the boot layers report the measured
                # MemTotal delta (their kernel checks stay unverified_container).
                "edgeslim_measure_in_container": True,
            },
            "children": groups,
        }
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Generated by tests/sim/fleet.py for fleet '{fleet}'; do not edit.\n"
    path.write_text(header + yaml.safe_dump(inv, sort_keys=False, default_flow_style=False))
    log(f"inventory {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def load_spec(args: argparse.Namespace) -> tuple[str, list[dict[str, Any]]]:
    if args.spec:
        spec = yaml.safe_load(Path(args.spec).read_text())
        fleet = args.fleet or spec.get("fleet", "sim")
        hosts = spec["hosts"]
    else:
        fleet = args.fleet or "sim"
        hosts = [{"name": f"{args.prefix}-{i:03d}", "variant": args.variant, "group": args.group}
                 for i in range(1, args.count + 1)]  # fmt: skip
    known = variants()
    for h in hosts:
        if h.get("variant") not in known:
            sys.exit(f"fleet: host {h.get('name')}: unknown variant {h.get('variant')!r} (known: {', '.join(known)})")
        if not h.get("group"):
            sys.exit(f"fleet: host {h.get('name')}: no group")
    return fleet, hosts


def cmd_up(args: argparse.Namespace) -> int:
    fleet, hosts = load_spec(args)
    ensure_prereqs(len(hosts) + len(fleet_hosts(None)))
    image = build_image.image_tag()
    if not build_image.image_exists(image):
        sys.exit(f"fleet: image {image} is not built: run `make image` (tests/sim/build-image.sh)")
    scale = os.environ.get("EDGESLIM_SIM_SCALE", str(args.scale))
    t0 = time.monotonic()
    ports = allocate_ports(len(hosts))
    for host, port in zip(hosts, ports, strict=True):
        run_host(fleet, host, port, image, scale)
    log(f"{len(hosts)} containers started in {time.monotonic() - t0:.1f} s (scale {scale}); waiting for ssh ...")
    with cf.ThreadPoolExecutor(max_workers=8) as pool:
        ready = list(pool.map(lambda p: wait_ready(p, args.timeout), ports))
    bad = [h["name"] for h, ok in zip(hosts, ready, strict=True) if not ok]
    write_inventory(fleet, Path(args.inventory))
    if bad:
        log(f"NOT READY after {args.timeout:.0f} s: {', '.join(bad)}")
        return 1
    log(f"fleet '{fleet}': {len(hosts)} hosts ready in {time.monotonic() - t0:.1f} s")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    fleet = args.fleet or (yaml.safe_load(Path(args.spec).read_text()).get("fleet") if args.spec else None)
    hosts = fleet_hosts(fleet if not args.all else None)
    if not hosts:
        log("no containers")
        return 0
    podman("rm", "-f", "-t", "0", *[h["container"] for h in hosts])
    for h in hosts:
        shutil.rmtree(LIVE_DT / h["container"], ignore_errors=True)
    log(f"removed {len(hosts)} containers")
    inv = Path(args.inventory)
    if inv.exists() and (args.all or f"fleet '{fleet}'" in inv.read_text().splitlines()[0]):
        inv.unlink()
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    """Shell exports for Molecule scenarios: the image tag, each variant's DT dir, expected MemTotal and Python."""
    image = build_image.image_tag()
    ensure_ssh_key()  # scenarios that reach a container over SSH authorize it
    print(f"export EDGESLIM_SIM_IMAGE={image}")
    print(f"export EDGESLIM_SIM_SSH_KEY={KEY}")
    # Molecule platforms that boot their extlinux.conf (the simulated boot) annotate io.edgeslim.sim.boot with it.
    print(f"export EDGESLIM_SIM_BOOT_STANDIN={BOOT_STANDIN}")
    for name, v in variants().items():
        key = name.upper().replace("-", "_")
        print(f"export EDGESLIM_SIM_DT_{key}={device_tree_dir(v)}")
        print(f"export EDGESLIM_SIM_MEMTOTAL_MIB_{key}={expected_memtotal_mib(v)}")
        print(f"export EDGESLIM_SIM_PYTHON_{key}={python_interpreter(v)}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    for h in fleet_hosts(args.fleet):
        print(f"{h['fleet']:10} {h['name']:24} {h['group']:18} {h['variant']:14} 127.0.0.1:{h['port']:<6} {h['state']}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("up", "down", "status", "inventory", "env"):
        p = sub.add_parser(name)
        p.add_argument("--fleet", help="fleet name (container label); default from the spec, else 'sim'")
        p.add_argument("--inventory", default=str(DEFAULT_INVENTORY), help="inventory file to write")
        p.add_argument("--spec", help="YAML fleet spec (fleet, hosts: [{name, variant, group}])")
        if name == "up":
            p.add_argument("--count", type=int, default=1)
            p.add_argument("--variant", default="orin-nano-8gb")
            p.add_argument("--group", default="warehouse-robots")
            p.add_argument("--prefix", default="jetson")
            p.add_argument("--scale", type=float, default=0.1, help="EDGESLIM_SIM_SCALE (env wins)")
            p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for each host")
        if name == "down":
            p.add_argument("--all", action="store_true", help="every edgeslim fleet on this machine")
    args = ap.parse_args()
    if args.cmd == "up":
        return cmd_up(args)
    if args.cmd == "down":
        return cmd_down(args)
    if args.cmd == "env":
        return cmd_env(args)
    if args.cmd == "inventory":
        write_inventory(args.fleet or "sim", Path(args.inventory))
        return 0
    return cmd_status(args)


if __name__ == "__main__":
    sys.exit(main())
