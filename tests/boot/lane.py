"""Helpers of the emulated-boot lane (docs/emulated-boot.md): the expected-size formulas, the readings taken on the
guest (MemTotal, kernel log, live device tree), ansible-playbook against it, and the figures file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / ".collections"))  # `make link`: edgeslim.jetson from this checkout
import qemu
from ansible_collections.edgeslim.jetson.plugins.module_utils import devicetree
from ansible_collections.edgeslim.jetson.plugins.module_utils import swiotlb as tlb

ARTIFACTS = REPO / "build/boot"
RESULTS = ARTIFACTS / "results.jsonl"
# The expected-size formulas live with the collection (the simulated fleet's boot stand-in uses the same ones):
# kernel 6.1 SWIOTLB costs per slot the 2 KiB buffer (IO_TLB_SIZE) plus 24 B of struct io_tlb_slot metadata, both
# memblock-allocated, so both leave MemTotal; default pool 32768 slots (64 MiB); a no-map carve-out of S bytes costs
# S - S/512. Confirmed to the kB in emulated-boot.md §3 (swiotlb=16384: +33152 kB; 65536: -66304 kB; 256 MiB no-map:
# -261632 kB).
SLOT_BYTES = tlb.SLOT_BYTES + tlb.SLOT_METADATA_BYTES
DEFAULT_SLOTS = tlb.DEFAULT_SLOTS
# Exact on the verified kernel; a few pages of slack for rounding we have not seen.
TOLERANCE_KB = 16


def swiotlb_cost_kb(slots: int) -> float:
    return tlb.memtotal_cost_bytes(slots) / 1024


def no_map_cost_kb(size_bytes: int) -> float:
    return devicetree.no_map_cost_bytes(size_bytes) / 1024


def record(test: str, **data: object) -> None:
    """One line per test in build/boot/results.jsonl: the figures docs/emulated-boot.md quotes."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a") as handle:
        handle.write(json.dumps({"test": test, "at": time.strftime("%FT%TZ", time.gmtime()), **data}) + "\n")


class Device:
    """A booted guest plus the readings the tests compare (MemTotal, kernel log, live device tree)."""

    def __init__(self, guest: qemu.Guest, run_dir: Path):
        self.guest = guest
        self.run_dir = run_dir
        self.ansible_runs: list[dict] = []

    def sh(self, command: str, check: bool = True) -> str:
        return self.guest.ssh(command, check=check).stdout

    def sudo(self, command: str, check: bool = True) -> str:
        return self.sh(f"sudo sh -c {shlex_quote(command)}", check=check)

    def memtotal_kb(self) -> int:
        return int(re.search(r"^MemTotal:\s+(\d+) kB", self.sh("cat /proc/meminfo"), re.M).group(1))

    def boot_id(self) -> str:
        return self.sh("cat /proc/sys/kernel/random/boot_id").strip()

    def cmdline(self) -> list[str]:
        return self.sh("cat /proc/cmdline").split()

    def iotlb_line(self) -> str | None:
        lines = [ln for ln in self.sudo("dmesg").splitlines() if "software IO TLB: mapped" in ln]
        return lines[-1] if lines else None

    def iotlb_mb(self) -> int | None:
        line = self.iotlb_line()
        match = re.search(r"\((\d+)MB\)", line or "")
        return int(match.group(1)) if match else None

    def nslabs(self) -> int | None:
        out = self.sudo("cat /sys/kernel/debug/swiotlb/io_tlb_nslabs", check=False).strip()
        return int(out) if out.isdigit() else None

    def reserve_failures(self) -> list[str]:
        return [ln for ln in self.sudo("dmesg").splitlines() if "failed to reserve" in ln]

    def extlinux(self) -> str:
        return self.sh("cat /boot/extlinux/extlinux.conf")

    def verdict(self, layer: str) -> dict | None:
        out = self.sudo(f"cat /var/lib/edgeslim/boot-commit/{layer}.json", check=False)
        return json.loads(out) if out.strip() else None

    def snapshot(self) -> dict:
        """Readings of the boot the device is in once it answers (after a play it may still be booting)."""
        self.guest.wait_ssh()
        return {
            "boot_id": self.boot_id(),
            "MemTotal_kb": self.memtotal_kb(),
            "iotlb": self.iotlb_line(),
            "nslabs": self.nslabs(),
            "cmdline_swiotlb": [a for a in self.cmdline() if a.startswith("swiotlb=")],
        }

    def play(self, playbook: str | Path, extra_vars: dict | None = None, name: str = "play",
             report_dir: Path | None = None) -> subprocess.CompletedProcess:  # fmt: skip
        """ansible-playbook against this guest with the testbed's tests/ansible.cfg (collection from this checkout,
        slim_report callback enabled); output kept as build/boot/<test>/<name>.log."""
        inventory = self.guest.inventory(self.run_dir / "hosts.yml")
        (self.run_dir / f"{name}.vars.json").write_text(json.dumps(extra_vars or {}, indent=2))
        env = dict(os.environ)
        env["PATH"] = f"{REPO / '.venv/bin'}:{env.get('PATH', '')}"
        env["ANSIBLE_CONFIG"] = str(REPO / "tests" / "ansible.cfg")
        env["ANSIBLE_FORCE_COLOR"] = "0"
        env["ANSIBLE_NOCOLOR"] = "1"
        if report_dir:
            env["ANSIBLE_EDGESLIM_REPORT_DIR"] = str(report_dir)
        argv = ["ansible-playbook", "-i", str(inventory), str(playbook), "-e", f"@{self.run_dir / f'{name}.vars.json'}"]
        # Each line with its time: where a slow run spends it (a task is seconds under TCG).
        env["ANSIBLE_LOG_PATH"] = str(self.run_dir / f"{name}.timed.log")
        t0 = time.monotonic()
        log = self.run_dir / f"{name}.log"
        with open(log, "w") as handle:  # streamed, so a running play can be followed
            res = subprocess.run(argv, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, text=True,
                                 check=False)  # fmt: skip
        res.stdout = log.read_text()
        secs = round(time.monotonic() - t0, 1)
        self.ansible_runs.append({"name": name, "rc": res.returncode, "seconds": secs})
        print(f"{name}: rc {res.returncode} in {secs} s (log {self.run_dir / f'{name}.log'})")
        return res


def shlex_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def summary(path: Path = RESULTS) -> str:
    """Figures over every run recorded in results.jsonl: `python tests/boot/lane.py [results.jsonl]`."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    boots = [r for r in rows if r["test"].endswith(".boots")]
    cold = sorted(r["cold_boot_s"] for r in boots if r.get("cold_boot_s"))
    reboots = sorted(b["seconds"] for r in boots for b in r["boots"][1:])
    firsts = sorted(r["boots"][0]["seconds"] for r in boots if r["boots"])
    resets = sum(r["watchdog_resets"] for r in boots)
    plays: dict[str, list[float]] = {}
    for r in boots:
        for run in r.get("ansible", []):
            plays.setdefault(run["name"], []).append(run["seconds"])

    def spread(xs: list[float]) -> str:
        return f"n={len(xs)} min {xs[0]:.0f} s, median {xs[len(xs) // 2]:.0f} s, max {xs[-1]:.0f} s" if xs else "n=0"

    out = [
        f"guests: {len(boots)}, boots: {sum(len(r['boots']) for r in boots)}, watchdog resets: {resets}, "
        f"gave up: {sum(1 for r in boots if r['gave_up'])}",
        f"cold boot, QEMU start -> ssh: {spread(cold)}",
        f"first boot, U-Boot banner -> ready: {spread(firsts)}",
        f"reboots, U-Boot banner -> ready: {spread(sorted(reboots))}",
    ]
    out += [f"play {name}: {spread(sorted(secs))}" for name, secs in sorted(plays.items())]
    for r in rows:
        if not r["test"].endswith(".boots"):
            keys = (
                "memtotal_before_kb",
                "memtotal_after_kb",
                "gained_kb",
                "expected_kb",
                "verdict",
                "report_reclaimed_mb",
            )
            out.append(f"{r['at']} {r['test']}: " + ", ".join(f"{k}={r[k]}" for k in keys if k in r))
    return "\n".join(out)


if __name__ == "__main__":
    print(summary(Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS))
