"""slim.yml vs the naive playbook users write today, on N simulated warehouse robots.

For each fleet size: bring up N simulated Orin Nanos (scale 0.1) in group warehouse-robots, then time, in this
order and on the same devices:

  slim        ansible-playbook slim.yml -l warehouse-robots            (serial 100 %, or the canary default with
  slim again  the same, idempotent re-run                               --canary)
  (reset: edgeslim.jetson.rollback, not timed)
  naive       bench/naive.yml: one systemd_service task per unit (same units and companions the profile
  naive again resolves to), set-default, lineinfile on extlinux.conf; idempotent re-run

and count module round trips per host (bench/callback_plugins/roundtrips.py). Prints a Markdown table.
Reboots are off (edgeslim_reboot_ok: false), so the SWIOTLB layer records "pending reboot" in both variants.

  flock /tmp/edgeslim-podman.lock .venv/bin/python bench/slim_bench.py --sizes 10 25 50
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
FLEET = "bench-slim"


def run(argv: list[str], env: dict[str, str] | None = None, ok=(0,)) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, cwd=ROOT, env=env, text=True, capture_output=True, check=False)
    if proc.returncode not in ok:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise SystemExit(f"{' '.join(argv)} failed (rc={proc.returncode}):\n{tail}")
    return proc


def warehouse_units() -> tuple[list[str], list[str]]:
    """The unit lists edgeslim.jetson.profile resolves warehouse_robot to (main units + companions)."""
    spec = importlib.util.spec_from_file_location("profile_resolve", ROOT / "plugins/filter/profile_resolve.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    pdir = ROOT / "profiles"
    catalog = {
        "dir": str(pdir),
        "classes": {p.stem: p.read_text() for p in sorted((pdir / "classes").glob("*.yml"))},
        "blocks": {p.stem: p.read_text() for p in sorted((pdir / "blocks").glob("*.yml"))},
        "protected": (pdir / "protected.yml").read_text(),
    }
    res = mod.resolve_profile(catalog, "warehouse_robot")
    if res["errors"]:
        raise SystemExit(f"profile: {res['errors']}")
    return res["profile"]["services"]["disable"], res["profile"]["services"]["mask"]


def playbook(args: list[str], inv: Path, env: dict[str, str], work: Path) -> tuple[float, float]:
    """Wall seconds and mean module round trips per host of one ansible-playbook run."""
    counts = work / "roundtrips.json"
    counts.unlink(missing_ok=True)
    env = dict(env, BENCH_ROUNDTRIPS_FILE=str(counts))
    t0 = time.perf_counter()
    proc = run([str(BIN / "ansible-playbook"), "-i", str(inv), *args], env=env, ok=(0, 2, 4))
    wall = time.perf_counter() - t0
    recap = [line for line in proc.stdout.splitlines() if " : ok=" in line]
    bad = [line for line in recap if "failed=0" not in line or "unreachable=0" not in line]
    if bad:
        why = [line for line in proc.stdout.splitlines() if "UNREACHABLE!" in line or "FAILED!" in line]
        raise SystemExit(f"hosts failed in {args}:\n" + "\n".join(bad + why[:10]))
    per_host = json.loads(counts.read_text())
    return wall, statistics.mean(v["roundtrips"] for v in per_host.values())


def bench(n: int, canary: bool, scale: str) -> list[tuple[str, float, float]]:
    work = Path(tempfile.mkdtemp(prefix="es-slim-bench-"))
    invdir = work / "inventory"
    invdir.mkdir()
    (invdir / "group_vars").symlink_to(ROOT / "inventories" / "sim" / "group_vars")
    inv = invdir / "hosts.yml"
    env = dict(
        os.environ,
        CONTAINERS_CONF=os.environ.get("CONTAINERS_CONF", str(ROOT / "tests" / "sim" / "containers.conf")),
        # Fleets reuse 127.0.0.1 ports: an SSH ControlMaster of an earlier fleet (ControlPersist) would be reused
        # for a new container and break ("mux_client_request_session ... Broken pipe"). One control dir per run.
        ANSIBLE_SSH_CONTROL_PATH_DIR=str(work / "cp"),
        PATH=f"{BIN}:{os.environ['PATH']}",
        EDGESLIM_SIM_SCALE=scale,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_EDGESLIM_REPORT_DIR=str(work / "report"),
        ANSIBLE_CALLBACK_PLUGINS=str(ROOT / "bench" / "callback_plugins"),
        ANSIBLE_CALLBACKS_ENABLED="edgeslim.jetson.slim_report,roundtrips",
    )
    fleet = [str(BIN / "python"), "tests/sim/fleet.py"]
    run(
        [
            *fleet,
            "up",
            "--fleet",
            FLEET,
            "--count",
            str(n),
            "--prefix",
            "bench-robot",
            "--group",
            "warehouse-robots",
            "--variant",
            "orin-nano-8gb",
            "--inventory",
            str(inv),
        ],
        env=env,
    )
    serial = [] if canary else ["-e", '{"edgeslim_serial": ["100%"]}']
    disable, mask = warehouse_units()
    naive = ["bench/naive.yml", "-e", json.dumps({"naive_disable": disable, "naive_mask": mask})]
    rows = []
    try:
        rows.append(("slim.yml", *playbook(["slim.yml", "-l", "warehouse-robots", *serial], inv, env, work)))
        rows.append(("slim.yml again", *playbook(["slim.yml", "-l", "warehouse-robots", *serial], inv, env, work)))
        run([str(BIN / "ansible-playbook"), "-i", str(inv), "playbooks/rollback.yml"], env=env)
        rows.append(("naive.yml", *playbook(naive, inv, env, work)))
        rows.append(("naive.yml again", *playbook(naive, inv, env, work)))
    finally:
        run([*fleet, "down", "--fleet", FLEET, "--inventory", str(inv)], env=env)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 25, 50])
    ap.add_argument("--canary", action="store_true", help="slim.yml with its default canary batches [1, 10%%, 100%%]")
    ap.add_argument("--scale", default="0.1", help="EDGESLIM_SIM_SCALE of the simulated services")
    args = ap.parse_args()
    print("| hosts | run | wall time | module round trips per host |")
    print("| ---: | --- | ---: | ---: |")
    for n in args.sizes:
        for name, wall, trips in bench(n, args.canary, args.scale):
            print(f"| {n} | {name} | {wall:.1f} s | {trips:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
