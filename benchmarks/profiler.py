"""Profiler overhead: the same busy job with the profiler off and on (system
metrics every 500 ms, SageMaker's default, and the ProfilerReport rule), side
by side in one run, interleaved:

- training time: from the job's Training transition to its Uploading one (the
  containers' run), which the profiler would slow by taking CPU from them;
- the orchestrating process's CPU time (`python -m flows.train`, the profiler
  thread's home) while the containers train, per second of training, as a share
  of the machine's cores (the report written at the end is not in it).

The job is the test probe's `burn` mode: a fixed amount of arithmetic on every
CPU the instance has, so a slower run means less CPU left for it.

    .venv/bin/python benchmarks/profiler.py [--runs 3] [--rounds 60000] [--write]
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
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from startup import build_image  # noqa: E402 - the sibling script (this folder is on sys.path)

IMAGE = "dockyard-bench/probe:1"


def job(folder: Path, name: str, rounds: int, profiled: bool) -> Path:
    spec = {
        "training_job_name": name,
        "algorithm_specification": {"training_image": IMAGE},
        "hyperparameters": {"mode": "burn", "rounds": str(rounds), "seconds": "600"},
        "output_data_config": {"s3_output_path": f"file://{folder}/out"},
    }
    if profiled:
        spec["profiler_config"] = {"profiling_interval_in_milliseconds": 500}
        spec["profiler_rule_configurations"] = [
            {"rule_configuration_name": "ProfilerReport", "rule_parameters": {"rule_to_invoke": "ProfilerReport"}}
        ]
    path = folder / f"{name}.json"
    path.write_text(json.dumps(spec))
    return path


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def run(path: Path, env: dict[str, str]) -> tuple[float, float]:
    """(training seconds, the orchestrator's CPU seconds while the containers trained) of one job:
    its process's CPU time read when the job store first shows Training and then Uploading."""
    from dockyard.settings import Settings
    from infra.job_store import open_store

    name = json.loads(path.read_text())["training_job_name"]
    errors = path.with_suffix(".err")
    marks: dict[str, float] = {}
    with errors.open("w") as err:
        child = subprocess.Popen(
            [sys.executable, "-m", "flows.train", str(path), "--json"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
        )  # fmt: skip
        store = open_store(Settings.from_env(env))
        while child.poll() is None and len(marks) < 2:
            try:
                record = store.find(name)
            except Exception:  # noqa: BLE001 - the store is not made yet
                record = None
            status = record.status.secondary.value if record and record.status.secondary else None
            if status in ("Training", "Uploading") and status not in marks:
                marks[status] = _cpu_seconds(child.pid)
            time.sleep(0.1)
        out, _ = child.communicate()
    if child.returncode != 0 or len(marks) < 2:
        raise SystemExit(f"{path.name} failed:\n{errors.read_text()[-2000:]}")
    starts = {
        t["Status"]: datetime.fromisoformat(t["StartTime"]) for t in json.loads(out)["SecondaryStatusTransitions"]
    }
    return (starts["Uploading"] - starts["Training"]).total_seconds(), marks["Uploading"] - marks["Training"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=60000, help="arithmetic rounds per CPU (about 30 s here)")
    parser.add_argument("--write", action="store_true", help="write the figures to benchmarks/RESULTS.md")
    args = parser.parse_args()
    build_image(IMAGE, ROOT / "tests" / "images" / "probe")
    cores = os.cpu_count() or 1
    figures: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory(prefix="bench-profiler-") as tmp:
        folder = Path(tmp)
        env = {**os.environ, "DOCKYARD_HOME": str(folder / "home")}
        try:
            run(job(folder, "warm-up", 200, False), env)  # the local Prefect server starts, not in a timed run
            for n in range(args.runs):
                for profiled in (False, True):
                    name = f"{'on' if profiled else 'off'}-{n}-{time.strftime('%H%M%S')}"
                    figures[profiled].append(run(job(folder, name, args.rounds, profiled), env))
                    print(name, figures[profiled][-1], file=sys.stderr)
        finally:
            from infra.prefect_api import stop_server

            stop_server(env["DOCKYARD_HOME"])
    off_t, on_t = (statistics.median(t for t, _ in figures[p]) for p in (False, True))
    off_cpu, on_cpu = (statistics.median(c / t for t, c in figures[p]) for p in (False, True))
    table = "\n".join(
        [
            "| profiler | training s (median) | x off | orchestrator CPU s per training s | share of the machine |",
            "|---|---|---|---|---|",
            f"| off | {off_t:.2f} | 1.000 | {off_cpu:.3f} | {100 * off_cpu / cores:.2f}% |",
            f"| on, 500 ms + ProfilerReport | {on_t:.2f} | {on_t / off_t:.3f} | {on_cpu:.3f} | "
            f"{100 * on_cpu / cores:.2f}% |",
        ]
    )
    added = 100 * (on_cpu - off_cpu) / cores
    note = (
        f"Goal: at most 2% more training time and 1% of the machine's CPU. Measured: {100 * (on_t / off_t - 1):+.1f}% "
        f"training time; while training, the profiler took {added:.2f}% of the machine's {cores} cores "
        f"({args.runs} runs each, interleaved; the probe's burn mode, {args.rounds} rounds per CPU)."
    )
    print(table + "\n\n" + note)
    if args.write:
        from startup import write_section

        command = " ".join(["python", "benchmarks/profiler.py", *sys.argv[1:]])
        write_section("profiler", "Profiler overhead on a busy job", table, note, command)


if __name__ == "__main__":
    main()
