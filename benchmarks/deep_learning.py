"""The built-in image classifier through dockyard against a bare `docker run`, in one run.

Data: scikit-learn's digits as JPEGs with .lst files (the digits example's
make_data.py), image_shape 3,32,32, ResNet-18, adam, batches of 32 per host.

- Throughput: images/s of training (the container's own `Train-throughput`
  line, epochs after the first) through `python -m flows.train`, against the
  same image run by hand with `docker run` on the same data and the same
  /opt/ml files (dockyard's own contract.config_files writes them).
- Time to first training step: from the command's start to the container's
  first `Epoch[0] Batch [20]` line (20 steps in), for both; dockyard's figure
  also from the job's Training status, which leaves out its own start-up.
- Two instances against one on the same cores (instance type `local`: no
  limits, so both share this machine's cores): images/s of the whole job.

    .venv/bin/python benchmarks/deep_learning.py [--epochs 3] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

IMAGE = "dockyard/image-classification:1.0"
FIRST_STEP = re.compile(r"Epoch\[0\] Batch \[20\]")
THROUGHPUT = re.compile(r"Epoch\[(\d+)\] Train-throughput=([0-9.]+) images/s")


def job(home: Path, data: Path, epochs: int, hosts: int) -> dict[str, Any]:
    channels = [
        {
            "channel_name": name,
            "content_type": "application/x-image",
            "data_source": {"s3_data_source": {"s3_uri": f"file://{data}/{name}"}},
        }
        for name in ("train", "train_lst", "validation", "validation_lst")
    ]
    return {
        "training_job_name": f"bench-ic-{hosts}-{int(time.time() * 1000) % 10**9}",
        "algorithm_specification": {"algorithm_name": "image-classification"},
        "resource_config": {"instance_type": "local", "instance_count": hosts},
        "input_data_config": channels,
        "hyperparameters": {
            "num_classes": "10",
            "num_training_samples": "1437",
            "image_shape": "3,32,32",
            "num_layers": "18",
            "optimizer": "adam",
            "learning_rate": "0.001",
            "mini_batch_size": "32",
            "epochs": str(epochs),
        },
        "output_data_config": {"s3_output_path": f"file://{home}/output"},
    }


def throughput(lines: list[str]) -> float:
    """Mean images/s over the epochs after the first (the first pays for warm-up)."""
    figures = [float(m[2]) for line in lines if (m := THROUGHPUT.search(line)) and int(m[1]) > 0]
    return statistics.mean(figures) if figures else float("nan")


def through_dockyard(home: Path, data: Path, epochs: int, hosts: int) -> dict[str, float]:
    spec = job(home, data, epochs, hosts)
    path = home / f"{spec['training_job_name']}.json"
    path.write_text(json.dumps(spec))
    env = {**os.environ, "DOCKYARD_HOME": str(home)}
    began = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "flows.train", str(path), "--json"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"the dockyard job failed: {done.stderr[-2000:]}")
    body = json.loads(done.stdout)
    log = (home / "jobs" / spec["training_job_name"] / "job.log").read_text().splitlines()
    first = next(datetime.fromisoformat(line.split(" ", 1)[0]).timestamp() for line in log if FIRST_STEP.search(line))
    training = next(t["StartTime"] for t in body["SecondaryStatusTransitions"] if t["Status"] == "Training")
    lead = [line for line in log if "[algo-1]" in line]
    return {
        "images_per_s": throughput(lead),
        "first_step_s": first - began,
        "first_step_from_training_s": first - datetime.fromisoformat(str(training)).timestamp(),
    }


def bare(home: Path, data: Path, epochs: int) -> dict[str, float]:
    """The same container by hand: the /opt/ml files dockyard would write, the data mounted read-only."""
    from dockyard import contract
    from dockyard.loading import build_job

    spec = build_job(job(home, data, epochs, 1), home=str(home), now=datetime.now(UTC))
    ml = home / "bare-ml"
    shutil.rmtree(ml, ignore_errors=True)
    (ml / "input" / "config").mkdir(parents=True)
    for name, text in contract.config_files(spec, "algo-1", ["algo-1"]).items():
        (ml / "input" / "config" / name).write_text(text)
    for sub in ("model", "output", "checkpoints"):
        (ml / sub).mkdir()
    mounts = ["-v", f"{ml / 'input' / 'config'}:/opt/ml/input/config:ro"]
    for name in ("train", "train_lst", "validation", "validation_lst"):
        mounts += ["-v", f"{data / name}:/opt/ml/input/data/{name}:ro"]
    for sub in ("model", "output", "checkpoints"):
        mounts += ["-v", f"{ml / sub}:/opt/ml/{sub}"]
    began = time.time()
    process = subprocess.Popen(
        ["docker", "run", "--rm", "--hostname", "algo-1", *mounts, IMAGE, "train"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines, first = [], float("nan")
    for line in process.stdout:
        lines.append(line)
        if first != first and FIRST_STEP.search(line):  # nan: not yet
            first = time.time() - began
    if process.wait() != 0:
        raise SystemExit("the bare run failed:\n" + "".join(lines[-20:]))
    return {"images_per_s": throughput(lines), "first_step_s": first}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="write the figures to benchmarks/RESULTS.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dockyard-bench-dl-"))
    try:
        home, data = work / "home", work / "data"
        home.mkdir()
        make_data = ROOT / "examples" / "image-classification-digits" / "make_data.py"
        subprocess.run([sys.executable, str(make_data), "--out", str(data)], check=True, capture_output=True)
        # The home's Prefect server starts once per home, not per job: started before any timing.
        from infra import prefect_api

        os.environ.pop("PREFECT_API_URL", None)
        prefect_api.ensure_api(str(home), print)
        bare_run = bare(home, data, args.epochs)
        one = through_dockyard(home, data, args.epochs, 1)
        two = through_dockyard(home, data, args.epochs, 2)
        figures = {"bare": bare_run, "dockyard_1_host": one, "dockyard_2_hosts": two}
        figures["throughput_ratio"] = {"dockyard_over_bare": one["images_per_s"] / bare_run["images_per_s"]}
        figures["two_over_one"] = {"images_per_s": 2 * two["images_per_s"] / one["images_per_s"]}
        print(json.dumps(figures, indent=2))
        if args.write:
            write(figures, args.epochs)
    finally:
        subprocess.run(
            [sys.executable, "-m", "cli.main", "server", "stop"],
            env={**os.environ, "DOCKYARD_HOME": str(work / "home")},
            cwd=ROOT,
            capture_output=True,
        )
        shutil.rmtree(work, ignore_errors=True)


def write(f: dict[str, Any], epochs: int) -> None:
    bare_run, one, two = f["bare"], f["dockyard_1_host"], f["dockyard_2_hosts"]
    table = "\n".join(
        [
            "| what | images/s | x bare | first step s | over bare s |",
            "|---|---|---|---|---|",
            f"| bare docker run, 1 host | {bare_run['images_per_s']:.1f} | 1.00 | {bare_run['first_step_s']:.1f} | 0 |",
            f"| dockyard, 1 host | {one['images_per_s']:.1f} | {one['images_per_s'] / bare_run['images_per_s']:.2f} | "
            f"{one['first_step_s']:.1f} | {one['first_step_s'] - bare_run['first_step_s']:.1f} |",
            f"| dockyard, 2 hosts (whole job) | {2 * two['images_per_s']:.1f} | "
            f"{2 * two['images_per_s'] / bare_run['images_per_s']:.2f} | {two['first_step_s']:.1f} | "
            f"{two['first_step_s'] - bare_run['first_step_s']:.1f} |",
        ]
    )
    section = (
        "<!-- deep-learning:begin -->\n## Deep learning: the image classifier through dockyard and bare\n\n"
        f"`python benchmarks/deep_learning.py --epochs {epochs} --write` on {datetime.now():%Y-%m-%d}, "
        "2 cores, CPU only (PyPI's torch 2.13 in the image, run on the CPUs):\n\n"
        f"{table}\n\n"
        "Digits as 32x32 JPEGs, ResNet-18, batches of 32 per host; images/s are the container's own figures for "
        "the epochs after the first (for two hosts: one host's figure times two). First step: from the command's "
        "start (`docker run`, or `python -m flows.train` with the home's Prefect server already up) to the line "
        "after 20 steps; dockyard's also from its Training status: "
        f"{one['first_step_from_training_s']:.1f} s (1 host), {two['first_step_from_training_s']:.1f} s (2 hosts). "
        "Two hosts on one 2-core machine share its cores, so they show the cost of DDP's all-reduce over the "
        "job network, not a speed-up; no GPU machine was lent to this run.\n"
        "<!-- deep-learning:end -->\n"
    )
    results = ROOT / "benchmarks" / "RESULTS.md"
    text = results.read_text()
    begin, end = "<!-- deep-learning:begin -->", "<!-- deep-learning:end -->\n"
    if begin in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    results.write_text(text)


if __name__ == "__main__":
    main()
