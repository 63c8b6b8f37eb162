"""slim.yml against two baselines on N simulated warehouse robots: what a run costs, and what it reclaims.

For each fleet size x batching x playbook, on a FRESH fleet of N simulated Orin Nanos (group warehouse-robots):

  slim.yml        the collection's main job (edgeslim_serial default [1, '10%', '100%'], or ['100%'])
  naive.yml       the same work written task by task: one systemd_service task per unit, set-default, a backup of
                  extlinux.conf, the carveouts overlay (.dtbo) copied to /boot, FDT/OVERLAYS/swiotlb= lineinfile
  impatient.yml   `systemctl disable --now <units...>` + `systemctl set-default`

each run twice (first run, re-run), timed, with per host: module runs that reached the device and controller-side
tasks (bench/callback_plugins/roundtrips.py), controller CPU seconds (user+sys of the ansible-playbook process tree),
and the MiB reclaimed (slim.yml: what its report claims; baselines: MemAvailable probed by the bench) against what
the simulation holds in the stopped units (tests/sim/image/services.yml size_mib x scale, plus the private anonymous
memory of the real Debian daemons probed before the run), and against what stopping those units frees when measured
directly: one more fresh device, `systemctl stop` of the same units through podman (no Ansible session),
MemAvailable read from outside before and after (the "measured stop"). Prints one Markdown table; --json writes
every figure. Reboots are off (edgeslim_reboot_ok: false): the boot layers are staged, not booted.
See docs/benchmarks.md.

  flock /tmp/edgeslim-podman.lock nice -n 5 .venv/bin/python bench/slim_bench.py --sizes 10 25 50 --batching both
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
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
FLEET = "bench-slim"
VARIANT = "orin-nano-8gb"
PLAYBOOKS = ("slim", "naive", "impatient", "mitogen")  # mitogen: slim.yml under Mitogen's strategy (--mitogen)
CANARY = [1, "10%", "100%"]  # edgeslim_serial's default (playbooks/slim.yml)
SETTLE_S = 5.0  # the bench's own wait before probing MemAvailable after a baseline (slim.yml settles by itself)
READINGS = 5  # MemAvailable readings, 1 s apart, averaged on each side of the measured stop
TIME_CATEGORIES = ("device", "systemd", "settle", "controller")


# ---- pure parts (tests/unit/bench) ------------------------------------------------------------------------------
def known_mib(catalog: list[dict[str, Any]], stopped: list[str], scale: float, debian_kb: dict[str, int]) -> float:
    """MiB the simulation holds in the units a run stops: the simulated daemons' size_mib x scale (with the units
    that are PartOf= a stopped one), plus the measured private anonymous memory of the real Debian daemons among them
    (``debian_kb``; ANON_SCRIPT says why not PSS)."""
    names = set(stopped)
    # a unit stopped by an alias is stopped by its name too (gdm3.service -> gdm.service), and so are its PartOf= units
    names.update(u["name"] for u in catalog if names & set(u.get("aliases", [])))
    total = 0.0
    for unit in catalog:
        if not (unit["name"] in names or unit.get("part_of") in names):
            continue
        if unit.get("kind") == "sim":
            total += float(unit.get("size_mib", 0)) * scale
        elif unit.get("kind") == "debian":
            total += debian_kb.get(unit["name"], 0) / 1024
    return total


def summarize(counts: dict[str, Any], n_hosts: int) -> dict[str, Any]:
    """Per-host means of one run's roundtrips.json, and its time split by category (seconds per host)."""
    hosts = counts.get("hosts", {})

    def mean(key: str) -> float:
        return sum(h[key] for h in hosts.values()) / n_hosts

    time_s = dict.fromkeys(TIME_CATEGORIES, 0.0)
    tasks = []
    for kind, rows in counts.get("tasks", {}).items():
        for name, row in rows.items():
            time_s[row["category"]] += row["seconds"] / n_hosts
            tasks.append({"task": name, "kind": kind, "category": row["category"], "runs": row["runs"],
                          "s_per_host": round(row["seconds"] / n_hosts, 2)})  # fmt: skip
    tasks.sort(key=lambda t: -t["s_per_host"])
    by_action: dict[str, float] = {}
    for h in hosts.values():
        for action, n in h.get("by_action", {}).items():
            by_action[action] = by_action.get(action, 0) + n / n_hosts
    return {
        "device": mean("device") if hosts else 0.0,
        "controller": mean("controller") if hosts else 0.0,
        "controller_s": mean("controller_s") if hosts else 0.0,
        "time_s": {k: round(v, 2) for k, v in time_s.items()},
        "by_action": {k: round(v, 2) for k, v in sorted(by_action.items())},
        "top_tasks": tasks[:12],
    }


def _ratio(base: float | None, value: float | None) -> str:
    return f"{base / value:.2f}x" if base and value else "-"


def _error(value: float | None, truth: float | None) -> str:
    return f"{(value - truth) / truth * 100:+.1f} %" if value is not None and truth else "-"


def _pair(first: float, rerun: float | None, fmt: str) -> str:
    """A "first, re-run" cell; a cell run without its re-run (--no-rerun) shows "-"."""
    return f"{first:{fmt}}, {'-' if rerun is None else format(rerun, fmt)}"


def render_table(results: list[dict[str, Any]]) -> str:
    """One Markdown table: a row per size x batching x playbook; speed-ups against the baselines of the same cell."""
    head = (
        "| hosts | batching | playbook | first run | re-run | device runs /host (first, re-run) "
        "| controller tasks /host (first, re-run) | speed-up vs naive (first, re-run) | vs impatient (first, re-run) "
        "| reclaimed MiB /host | error vs known | error vs measured stop | controller CPU s /host (first, re-run) "
        "| first run, s /host: device · systemd · settle · controller tasks |"
    )
    lines = [head, "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    cells = {(r["hosts"], r["batching"], r["playbook"]): r for r in results}
    for r in results:
        base = {p: cells.get((r["hosts"], r["batching"], p)) for p in ("naive", "impatient")}

        def vs(p: str, r: dict[str, Any] = r, base: dict = base) -> str:
            b = base[p]
            if b is None:
                return "-"
            return f"{_ratio(b['first_s'], r['first_s'])}, {_ratio(b['rerun_s'], r['rerun_s'])}"

        err = _error(r.get("reclaimed_mib"), r.get("known_mib"))
        err_stop = _error(r.get("reclaimed_mib"), r.get("stop_mib"))
        stop = f", stop {r['stop_mib']:.1f}" if r.get("stop_mib") else ""
        mib = (
            f"{r['reclaimed_mib']:.1f} (known {r['known_mib']:.1f}{stop})"
            if r.get("reclaimed_mib") is not None
            else "-"
        )
        t = r["first"]["time_s"]
        again = r["rerun"] or {}
        rerun_s = "-" if r["rerun_s"] is None else f"{r['rerun_s']:.1f} s"
        lines.append(
            f"| {r['hosts']} | {r['batching']} | {r['playbook']} | {r['first_s']:.1f} s | {rerun_s} "
            f"| {_pair(r['first']['device'], again.get('device'), '.1f')} "
            f"| {_pair(r['first']['controller'], again.get('controller'), '.1f')} "
            f"| {vs('naive')} | {vs('impatient')} | {mib} | {err} | {err_stop} "
            f"| {_pair(r['cpu_first'], r['cpu_rerun'], '.2f')} "
            f"| {' · '.join(f'{t[c]:.1f}' for c in TIME_CATEGORIES)} |"
        )
    return "\n".join(lines)


def median_result(reps: list[dict[str, Any]]) -> dict[str, Any]:
    """Several repetitions of one cell: median times and CPU, counts of the last repetition (they do not vary)."""
    out = dict(reps[-1])
    for key in ("first_s", "rerun_s", "cpu_first", "cpu_rerun"):
        values = [r[key] for r in reps if r[key] is not None]
        out[key] = statistics.median(values) if values else None
    out["reps"] = len(reps)
    return out


def merge_runs(documents: list[dict[str, Any]]) -> dict[str, Any]:
    """The repetitions of several invocations' --json files, grouped by cell (in first-seen order) into medians:
    e.g. the second repetition of a cell measured by another invocation on the same engine."""
    cells: dict[tuple[int, str, str], list[dict[str, Any]]] = {}
    every: list[dict[str, Any]] = []
    for doc in documents:
        for rep in doc.get("repetitions") or []:
            cells.setdefault((rep["hosts"], rep["batching"], rep["playbook"]), []).append(rep)
            every.append(rep)
    if not cells:
        raise SystemExit("--merge: no repetitions in the given files")
    return {"results": [median_result(reps) for reps in cells.values()], "repetitions": every}


# ---- running ----------------------------------------------------------------------------------------------------
def run(argv: list[str], env: dict[str, str], ok=(0,)) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, cwd=ROOT, env=env, text=True, capture_output=True, check=False)
    if proc.returncode not in ok:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise SystemExit(f"{' '.join(argv)} failed (rc={proc.returncode}):\n{tail}")
    return proc


def timed_playbook(args: list[str], env: dict[str, str], work: Path, tag: str) -> dict[str, Any]:
    """Wall seconds, controller CPU seconds (user+sys of ansible-playbook and every process it waited for) and the
    callback's counts of one run; fails when a host failed."""
    counts = work / f"{tag}.roundtrips.json"
    env = dict(env, BENCH_ROUNDTRIPS_FILE=str(counts), ANSIBLE_EDGESLIM_REPORT_DIR=str(work / f"{tag}.report"))
    with open(work / f"{tag}.log", "w+") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(BIN / "ansible-playbook"), *args], cwd=ROOT, env=env, stdout=log, stderr=log)
        status, usage = os.wait4(proc.pid, 0)[1:]
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        out = log.read()
    recap = [line for line in out.splitlines() if " : ok=" in line]
    bad = [line for line in recap if "failed=0" not in line or "unreachable=0" not in line]
    if proc.returncode != 0 or bad or not recap:
        why = [line for line in out.splitlines() if "UNREACHABLE!" in line or "FAILED!" in line or "ERROR" in line]
        raise SystemExit(f"{tag}: rc={proc.returncode}, see {work / (tag + '.log')}:\n" + "\n".join(bad + why[:10]))
    report = work / f"{tag}.report" / "edgeslim-report.json"
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "counts": json.loads(counts.read_text()),
        "report": json.loads(report.read_text()) if report.exists() else None,
    }


def load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def warehouse_profile() -> dict[str, Any]:
    """What edgeslim.jetson.profile resolves warehouse_robot to (units with companions, carveout recipes)."""
    mod = load_module("profile_resolve", ROOT / "plugins/filter/profile_resolve.py")
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
    return res["profile"]


def build_dtbo(recipes: list[str], work: Path) -> Path:
    """The carveouts overlay for the naive baseline: the same plan and source edgeslim compiles, built with dtc."""
    sys.path.insert(0, str(ROOT / ".collections"))
    sys.path.insert(0, str(ROOT / "tests" / "sim"))
    import fleet  # tests/sim/fleet.py: the variant's device tree as the fleet mounts it
    from ansible_collections.edgeslim.jetson.plugins.module_utils import dt_overlay

    dt_dir = fleet.device_tree_dir(fleet.variants()[VARIANT])
    dts = work / "carveouts.dts"
    dts.write_text(dt_overlay.render_dts(dt_overlay.plan(str(dt_dir), recipes)))
    out = work / "carveouts.dtbo"
    subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", str(out), str(dts)], check=True)
    return out


def containers(inv: Path) -> list[str]:
    data = yaml.safe_load(inv.read_text())
    hosts = data["all"]["children"]["warehouse-robots"]["hosts"]
    return [h["edgeslim_sim_container"] for h in hosts.values()]


def podman_sh(container: str, script: str, env: dict[str, str]) -> str:
    return run(["podman", "exec", container, "sh", "-c", script], env).stdout


# What stopping a real Debian daemon frees: the private anonymous memory of every process in its control group
# ("Anonymous" in /proc/PID/smaps_rollup). Not PSS: PSS also holds a share of file-backed pages (the binary, shared
# libraries), which stay in the page cache after the process exits, where MemAvailable counts them as available
# already. The group is looked up under cgroup v2, the hybrid layout's unified tree and the v1 systemd tree (the
# testbed's host is v1; the device's own lookup, plugins/module_utils/unitmem.py, tries the same three), child groups
# included. CGROOT and PROCROOT are for the unit test.
ANON_SCRIPT = r"""cgroot=${CGROOT:-/sys/fs/cgroup}; procroot=${PROCROOT:-/proc}
for u in "$@"; do
  cg=$(systemctl show -P ControlGroup "$u" 2>/dev/null); kb=0
  if [ -n "$cg" ]; then
    for base in "$cgroot$cg" "$cgroot/unified$cg" "$cgroot/systemd$cg"; do
      [ -f "$base/cgroup.procs" ] || continue
      for pid in $(find "$base" -name cgroup.procs -exec cat {} +); do
        k=$(awk '/^Anonymous:/{print $2}' "$procroot/$pid/smaps_rollup" 2>/dev/null); kb=$((kb + ${k:-0}))
      done
      break
    done
  fi
  echo "$u $kb"
done"""


def parse_unit_kb(out: str) -> dict[str, int]:
    """``<unit> <kB>`` lines -> {unit: kB}."""
    return {line.split()[0]: int(line.split()[1]) for line in out.splitlines() if len(line.split()) == 2}


def debian_anon_kb(container: str, units: list[str], env: dict[str, str]) -> dict[str, int]:
    return parse_unit_kb(podman_sh(container, ANON_SCRIPT.replace('"$@"', " ".join(units)), env))


def mem_available_kb(container: str, env: dict[str, str]) -> int:
    return int(podman_sh(container, "awk '/^MemAvailable:/{print $2}' /proc/meminfo", env).strip())


def existing_units(container: str, units: list[str], env: dict[str, str]) -> list[str]:
    out = podman_sh(container, "systemctl list-unit-files --no-legend --full " + " ".join(units) + " || true", env)
    found = {line.split()[0] for line in out.splitlines() if line.strip()}
    return [u for u in units if u in found]


def mean_available_kb(container: str, env: dict[str, str]) -> float:
    values = []
    for i in range(READINGS):
        if i:
            time.sleep(1.0)
        values.append(mem_available_kb(container, env))
    return statistics.mean(values)


def measured_stop(units: list[str], ctx: dict[str, Any]) -> float:
    """MiB that stopping ``units`` frees on a fresh simulated device, measured without Ansible: MemAvailable read from
    outside (mean of READINGS readings) before and SETTLE_S after one ``systemctl stop`` run through podman. The
    truth the "known" model approximates: it also holds what the model leaves out (the daemons' kernel memory,
    their D-Bus and systemd state)."""
    work = Path(tempfile.mkdtemp(prefix="es-bench-stop-"))
    inv = work / "hosts.yml"
    env = ctx["env"]
    fleet = [str(BIN / "python"), "tests/sim/fleet.py"]
    run([*fleet, "up", "--fleet", "bench-stop", "--count", "1", "--prefix", "stop-robot", "--group", "warehouse-robots",
         "--variant", VARIANT, "--inventory", str(inv)], env)  # fmt: skip
    try:
        container = containers(inv)[0]
        present = existing_units(container, units, env)
        time.sleep(4 * SETTLE_S)  # a device that just booted is still starting units
        before = mean_available_kb(container, env)
        run(["podman", "exec", container, "systemctl", "stop", *present], env)
        time.sleep(SETTLE_S)
        after = mean_available_kb(container, env)
    finally:
        run([*fleet, "down", "--fleet", "bench-stop", "--inventory", str(inv)], env)
    return (after - before) / 1024


def bench_cell(n: int, batching: str, playbook: str, ctx: dict[str, Any]) -> dict[str, Any]:
    """One playbook on a fresh fleet of n hosts: first run and re-run (unless --no-rerun names the playbook)."""
    work = Path(tempfile.mkdtemp(prefix=f"es-bench-{n}-{batching}-{playbook}-"))
    invdir = work / "inventory"
    invdir.mkdir()
    (invdir / "group_vars").symlink_to(ROOT / "inventories" / "sim" / "group_vars")
    inv = invdir / "hosts.yml"
    # Fleets reuse 127.0.0.1 ports: an SSH ControlMaster of an earlier fleet (ControlPersist) would be reused for a
    # new container and break ("mux_client_request_session ... Broken pipe"). One control dir per fleet.
    env = dict(ctx["env"], ANSIBLE_SSH_CONTROL_PATH_DIR=str(work / "cp"))
    if playbook == "mitogen":
        env.update(
            ANSIBLE_STRATEGY_PLUGINS=str(ctx["mitogen"] / "ansible_mitogen" / "plugins" / "strategy"),
            ANSIBLE_STRATEGY="mitogen_linear",
        )
    fleet = [str(BIN / "python"), "tests/sim/fleet.py"]
    run([*fleet, "up", "--fleet", FLEET, "--count", str(n), "--prefix", "bench-robot", "--group", "warehouse-robots",
         "--variant", VARIANT, "--inventory", str(inv)], env)  # fmt: skip
    prof = ctx["profile"]["services"]
    units = prof["disable"] + prof["mask"]
    try:
        names = containers(inv)
        debian = [u["name"] for u in ctx["catalog"] if u.get("kind") == "debian" and u["name"] in units]
        known = statistics.mean(
            known_mib(ctx["catalog"], units, ctx["scale"], debian_anon_kb(c, debian, env)) for c in names
        )
        # The sim inventory lets the demo's robots reboot; the benchmark stages the boot layers (docstring).
        common = ["-i", str(inv), "-e", json.dumps({"edgeslim_reboot_ok": False})]
        if playbook in ("slim", "mitogen"):
            serial = [] if batching == "canary" else ["-e", json.dumps({"edgeslim_serial": ["100%"]})]
            args = ["slim.yml", "-l", "warehouse-robots", *common, *serial]
        else:
            serial = ["-e", json.dumps({"bench_serial": CANARY})] if batching == "canary" else []
            if playbook == "naive":
                extra = {"naive_disable": prof["disable"], "naive_mask": prof["mask"],
                         "naive_dtbo_src": str(ctx["dtbo"]), "naive_fdt": ctx["fdt"]}  # fmt: skip
            else:
                extra = {"impatient_units": existing_units(names[0], units, env)}
            args = [f"bench/{playbook}.yml", *common, "-e", json.dumps(extra), *serial]
        before = {c: mem_available_kb(c, env) for c in names}
        first = timed_playbook(args, env, work, "first")
        if first["report"]:
            rows = first["report"]["hosts"]
            reclaimed = statistics.mean(sum(v or 0 for v in r["reclaimed_mb"].values()) for r in rows)
        else:
            reclaimed = None
        time.sleep(SETTLE_S)
        probed = statistics.mean((mem_available_kb(c, env) - before[c]) / 1024 for c in names)
        rerun = None if playbook in ctx["no_rerun"] else timed_playbook(args, env, work, "rerun")
    finally:
        run([*fleet, "down", "--fleet", FLEET, "--inventory", str(inv)], env)
    return {
        "hosts": n,
        "batching": batching,
        "playbook": playbook,
        "first_s": first["wall"],
        "rerun_s": rerun["wall"] if rerun else None,
        "cpu_first": first["cpu"] / n,
        "cpu_rerun": rerun["cpu"] / n if rerun else None,
        "first": summarize(first["counts"], n),
        "rerun": summarize(rerun["counts"], n) if rerun else None,
        # what slim.yml reports (its MemAvailable delta); for the baselines, the bench's probe
        "reclaimed_mib": reclaimed if reclaimed is not None else probed,
        "reclaimed_source": "report" if reclaimed is not None else "probe",
        "probed_mib": probed,
        "known_mib": known,
        "stop_mib": ctx.get("stop_mib"),
        "logs": str(work),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 25, 50], help="fleet sizes (default 10 25 50)")
    ap.add_argument(
        "--batching",
        choices=("canary", "all", "both"),
        default="both",
        help="canary: edgeslim_serial default [1, 10%%, 100%%]; all: serial 100%%; both (default)",
    )
    ap.add_argument("--reps", type=int, default=2, help="repetitions of each cell; the table shows medians")
    ap.add_argument("--playbooks", nargs="+", choices=PLAYBOOKS, default=list(PLAYBOOKS[:3]))
    ap.add_argument(
        "--mitogen",
        type=Path,
        help="directory holding ansible_mitogen (e.g. pip install --target DIR mitogen); adds the mitogen row",
    )
    ap.add_argument(
        "--no-rerun",
        nargs="+",
        choices=PLAYBOOKS,
        default=[],
        help="playbooks whose cells skip the re-run (e.g. naive: the goal compares first runs; its re-run is long)",
    )
    ap.add_argument("--scale", type=float, default=0.1, help="EDGESLIM_SIM_SCALE of the simulated services")
    ap.add_argument("--json", type=Path, help="write every figure (per repetition too) to this file")
    ap.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        help="run nothing: print the table of the repetitions in these --json files (medians per cell)",
    )
    args = ap.parse_args()
    if args.merge:
        merged = merge_runs([json.loads(path.read_text()) for path in args.merge])
        if args.json:
            args.json.write_text(json.dumps(merged, indent=1))
        print(render_table(merged["results"]))
        return 0
    if min(args.sizes) < 1 or args.reps < 1:
        ap.error("--sizes and --reps must be at least 1")
    if args.mitogen:
        if not (args.mitogen / "ansible_mitogen" / "plugins" / "strategy" / "mitogen_linear.py").is_file():
            ap.error(f"--mitogen {args.mitogen}: no ansible_mitogen/plugins/strategy/mitogen_linear.py there")
        if "mitogen" not in args.playbooks:
            args.playbooks.append("mitogen")
    elif "mitogen" in args.playbooks:
        ap.error("the mitogen row needs --mitogen DIR")
    work = Path(tempfile.mkdtemp(prefix="es-bench-"))
    profile = warehouse_profile()
    env = dict(
        os.environ,
        CONTAINERS_CONF=os.environ.get("CONTAINERS_CONF", str(ROOT / "tests" / "sim" / "containers.conf")),
        PATH=f"{BIN}:{os.environ['PATH']}",
        EDGESLIM_SIM_SCALE=str(args.scale),
        ANSIBLE_CONFIG=str(ROOT / "tests" / "ansible.cfg"),
        ANSIBLE_CALLBACK_PLUGINS=str(ROOT / "bench" / "callback_plugins"),
        ANSIBLE_CALLBACKS_ENABLED="edgeslim.jetson.slim_report,roundtrips",
    )
    sys.path.insert(0, str(ROOT / "tests" / "sim"))
    import fleet

    ctx = {
        "env": env,
        "profile": profile,
        "scale": args.scale,
        "catalog": yaml.safe_load((ROOT / "tests/sim/image/services.yml").read_text())["units"],
        "dtbo": build_dtbo(profile["carveouts"]["recipes"], work),
        "fdt": f"/boot/dtb/kernel_{fleet.variants()[VARIANT]['dtb']}",
        "mitogen": args.mitogen,
        "no_rerun": set(args.no_rerun),
    }
    prof = profile["services"]
    ctx["stop_mib"] = measured_stop(prof["disable"] + prof["mask"], ctx)
    print(f"bench: stopping the run's units on a fresh device frees {ctx['stop_mib']:.1f} MiB (measured)",
          file=sys.stderr, flush=True)  # fmt: skip
    batchings = ["canary", "all"] if args.batching == "both" else [args.batching]
    results, every = [], []
    for n in args.sizes:
        for batching in batchings:
            for playbook in args.playbooks:
                reps = []
                for rep in range(args.reps):
                    print(f"bench: {n} hosts, {batching}, {playbook}, repetition {rep + 1} ...", file=sys.stderr,
                          flush=True)  # fmt: skip
                    reps.append(bench_cell(n, batching, playbook, ctx))
                every.extend(reps)
                results.append(median_result(reps))
                if args.json:
                    args.json.write_text(json.dumps({"results": results, "repetitions": every}, indent=1))
    print(render_table(results))
    print("\nSlowest tasks of each first run (s per host):")
    for r in results:
        top = ", ".join(f"{t['task']} {t['s_per_host']}" for t in r["first"]["top_tasks"][:5])
        print(f"- {r['hosts']} {r['batching']} {r['playbook']}: {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
