"""Batch module vs. a loop of ansible.builtin.systemd_service on one simulated host.

Starts one systemd container, creates N simulated daemons (bench/services_sim_units.sh: enabled services, some
with a socket companion, some static), then times, alternating and repeated:

  batch  one edgeslim.jetson.units task: disable (+ companions) / mask (static ones) / set-default
  loop   one ansible.builtin.systemd_service task per unit (same units, sockets listed explicitly, masked for the
         static ones) + ansible.builtin.command set-default

each from the same slimmed-back-to-stock state, plus an idempotent re-run of each, and an empty playbook as the
baseline for ansible-playbook's own start-up. Prints a table; exits non-zero if a run fails or the two variants
leave different unit states. Run it under the podman lock:

  flock /tmp/edgeslim-podman.lock .venv/bin/python bench/services_bench.py --image IMAGE [--units 24] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = "es-bench-services"


def sh(argv: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, text=True, capture_output=True, check=False, **kw)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed (rc={proc.returncode}): {proc.stderr.strip()[-1000:]}")
    return proc


def podman(*args: str) -> subprocess.CompletedProcess:
    return sh(["podman", *args])


def units(n: int) -> tuple[list[str], list[str], list[str]]:
    """(disable, mask, sockets); a socket follows its service's action (the module finds it via TriggeredBy,
    the loop gets it listed explicitly: sockets of masked services are masked, the others disabled)."""
    disable, mask, sockets = [], [], []
    for i in range(1, n + 1):
        name = f"es-sim-{i:02d}.service"
        (mask if i % 5 == 0 else disable).append(name)
        if i % 4 == 0:
            sockets.append(f"es-sim-{i:02d}.socket")
    return disable, mask, sockets


def socket_of(service: str) -> str:
    return service.replace(".service", ".socket")


def state(n: int) -> dict[str, str]:
    disable, mask, sockets = units(n)
    names = disable + mask + sockets
    out = podman("exec", NAME, "systemctl", "show", "-p", "Id,UnitFileState,ActiveState", "--", *names).stdout
    result = {}
    for block in out.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines())
        result[props["Id"]] = f"{props['UnitFileState']}/{props['ActiveState']}"
    result["default"] = podman("exec", NAME, "systemctl", "get-default").stdout.strip()
    return result


def reset(n: int) -> None:
    _disable, mask, sockets = units(n)
    podman("exec", NAME, "systemctl", "unmask", "--", *mask, *sockets)
    podman("exec", NAME, "rm", "-f", "/var/lib/edgeslim/journal.json")
    podman("exec", NAME, "sh", "/root/services_sim_units.sh", str(n))


def playbook(path: Path, inventory: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(
        [str(ROOT / ".venv/bin/ansible-playbook"), "-i", str(inventory), str(path)],
        text=True,
        capture_output=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-2000:])
        raise SystemExit(f"{path.name} failed (rc={proc.returncode})")
    return elapsed


def write_playbooks(tmp: Path, n: int) -> dict[str, Path]:
    disable, mask, sockets = units(n)
    masked_sockets = [socket_of(m) for m in mask if socket_of(m) in sockets]
    head = "- hosts: bench\n  gather_facts: false\n  tasks:\n"
    books = {
        "baseline": head + "    - ansible.builtin.ping:\n",
        "batch": head
        + "    - edgeslim.jetson.units:\n"
        + f"        disable: {json.dumps(disable)}\n"
        + f"        mask: {json.dumps(mask)}\n"
        + "        default_target: multi-user.target\n",
        "loop": head
        + "    - ansible.builtin.systemd_service:\n"
        + "        name: '{{ item }}'\n        state: stopped\n        enabled: false\n"
        + f"      loop: {json.dumps(disable + [s for s in sockets if s not in masked_sockets])}\n"
        + "    - ansible.builtin.systemd_service:\n"
        + "        name: '{{ item }}'\n        state: stopped\n        masked: true\n"
        + f"      loop: {json.dumps(mask + masked_sockets)}\n"
        + "    - ansible.builtin.command: systemctl set-default multi-user.target\n"
        + "      changed_when: true\n",
    }
    paths = {}
    for key, text in books.items():
        paths[key] = tmp / f"{key}.yml"
        paths[key].write_text("---\n" + text)
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", required=True)
    parser.add_argument("--units", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(ROOT / "tests/sim/containers.conf"))
    env["ANSIBLE_CONFIG"] = str(ROOT / "tests" / "ansible.cfg")
    os.environ.update({"CONTAINERS_CONF": env["CONTAINERS_CONF"]})
    subprocess.run(["podman", "rm", "-f", NAME], capture_output=True, check=False)
    podman("run", "-d", "--name", NAME, args.image, "/sbin/init")
    try:
        for _attempt in range(60):  # "Failed to connect to bus" right after start: retry until running/degraded
            probe = subprocess.run(
                ["podman", "exec", NAME, "systemctl", "is-system-running"], capture_output=True, check=False
            )
            if probe.stdout.strip() in (b"running", b"degraded"):
                break
            time.sleep(0.5)
        podman("cp", str(ROOT / "bench/services_sim_units.sh"), f"{NAME}:/root/services_sim_units.sh")
        reset(args.units)
        stock = state(args.units)
        with tempfile.TemporaryDirectory() as tmpdir:
            tmp = Path(tmpdir)
            inventory = tmp / "inventory.ini"
            inventory.write_text(
                f"[bench]\n{NAME} ansible_connection=containers.podman.podman "
                "ansible_python_interpreter=/usr/bin/python3\n"
            )
            books = write_playbooks(tmp, args.units)
            times: dict[str, list[float]] = {k: [] for k in ("baseline", "batch", "batch_rerun", "loop", "loop_rerun")}
            finals: dict[str, dict[str, str]] = {}
            for _round in range(args.rounds):
                times["baseline"].append(playbook(books["baseline"], inventory, env))
                for variant in ("batch", "loop"):
                    reset(args.units)
                    assert state(args.units) == stock, "reset did not return to the stock state"
                    times[variant].append(playbook(books[variant], inventory, env))
                    finals[variant] = state(args.units)
                    times[variant + "_rerun"].append(playbook(books[variant], inventory, env))
            if finals["batch"] != finals["loop"]:
                print("variants disagree:", json.dumps(finals, indent=1))
                return 1
    finally:
        subprocess.run(["podman", "rm", "-f", NAME], capture_output=True, check=False)
    disable, mask, sockets = units(args.units)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"units: {len(disable)} disable + {len(sockets)} sockets + {len(mask)} mask + set-default, one host, "
        f"podman connection, {args.rounds} rounds (median seconds, wall time of ansible-playbook)"
    )
    for key, values in times.items():
        extra = f"  (minus baseline {med[key] - med['baseline']:.2f})" if key != "baseline" else ""
        print(f"  {key:12s} {med[key]:6.2f}   runs: {', '.join(f'{v:.2f}' for v in values)}{extra}")
    net_b, net_l = med["batch"] - med["baseline"], med["loop"] - med["baseline"]
    print(
        f"apply: batch is {med['loop'] / med['batch']:.1f}x faster end-to-end, "
        f"{net_l / max(net_b, 0.01):.1f}x faster without ansible-playbook start-up"
    )
    print(
        f"idempotent re-run: batch {med['batch_rerun']:.2f}s vs loop {med['loop_rerun']:.2f}s "
        f"({med['loop_rerun'] / med['batch_rerun']:.1f}x)"
    )
    print("final unit states identical in both variants:", len(finals["batch"]) - 1, "units + default target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
