"""Input modes on the same data, in one run, against an S3 endpoint over HTTP.

The endpoint is moto's server in its own process (the only S3 server this
machine has offline; it bounds every S3 figure alike). Data: a prefix of
OBJECTS objects of OBJECT_MB MB, and one large file of LARGE_MB MB.

- File mode staging: dockyard's staging (`carry_out`, 8 at a time) against
  boto3's transfer manager downloading the same prefix (8 threads, the best
  Python peer) and a plain local copy of the same files (the floor).
- Pipe mode: dockyard's streamer feeding a FIFO read by a reader on the host:
  time to first byte and throughput, against File mode (whose first byte is
  available only once the prefix is staged).
- FastFile: the large file through dockyard's s3fs-fuse mount: time to first
  byte against downloading the whole file first, and the cost of a 4 KB read
  at a random offset against the same read from a local file.

    .venv/bin/python benchmarks/input_modes.py [--write]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OBJECTS, OBJECT_MB, LARGE_MB = 32, 4, 128
BUCKET = "bench-input-modes"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    return server, f"http://127.0.0.1:{port}"


def timed(fn: object) -> float:
    began = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="write the figures to benchmarks/RESULTS.md")
    args = parser.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    server, endpoint = start_moto()
    work = Path(tempfile.mkdtemp(prefix="dockyard-bench-input-"))
    try:
        rows, notes = run(endpoint, work, args.runs)
    finally:
        subprocess.run(["umount", "-l", str(work / "mount")], capture_output=True)
        server.terminate()
        shutil.rmtree(work, ignore_errors=True)
    table = "\n".join(["| mode | what | median | x floor or peer |", "|---|---|---|---|", *rows])
    note = (
        f"{OBJECTS} objects of {OBJECT_MB} MB ({OBJECTS * OBJECT_MB} MB) and one {LARGE_MB} MB file on moto's S3 "
        f"server over HTTP (a separate process); median of {args.runs} runs. " + " ".join(notes)
    )
    print(f"{table}\n\n{note}")
    if args.write:
        from startup import write_section  # the sibling script (this folder is on sys.path)

        command = " ".join(["python", "benchmarks/input_modes.py", *sys.argv[1:]])
        write_section("input-modes", "Input modes: File, Pipe and FastFile on the same data", table, note, command)


def run(endpoint: str, work: Path, runs: int) -> tuple[list[str], list[str]]:
    import boto3
    from boto3.s3.transfer import TransferConfig

    from infra import fuse, pipe, storage
    from tasks.stage_data import Download, StageDataPlan, Stream, carry_out, epoch_chunks

    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=BUCKET)
    blob = os.urandom(OBJECT_MB << 20)
    source = work / "local-source"
    source.mkdir()
    for i in range(OBJECTS):
        s3.put_object(Bucket=BUCKET, Key=f"prefix/part-{i:03d}", Body=blob)
        (source / f"part-{i:03d}").write_bytes(blob)
    large = os.urandom(LARGE_MB << 20)
    s3.put_object(Bucket=BUCKET, Key="large/big.bin", Body=large)
    (source / "big.bin").write_bytes(large)
    total_mb = OBJECTS * OBJECT_MB
    objects = storage.list_objects(f"s3://{BUCKET}/prefix/", endpoint)

    def fresh(name: str) -> Path:
        folder = work / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        return folder

    def dockyard_file() -> None:
        dest = fresh("dockyard")
        plan = StageDataPlan(
            downloads=tuple(
                Download(uri=o.uri, size=o.size, dest=str(dest / o.relative), host="algo-1", channel="t")
                for o in objects
            )
        )
        carry_out(plan, 8, endpoint, lambda _: None)

    def boto3_file() -> None:
        dest = fresh("boto3")
        config = TransferConfig(max_concurrency=8)
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda o: s3.download_file(BUCKET, o.uri.split("/", 3)[3], str(dest / o.relative), Config=config),
                    objects,
                )
            )

    def local_copy() -> None:
        dest = fresh("copy")
        for f in sorted(source.glob("part-*")):
            shutil.copyfile(f, dest / f.name)

    results: dict[str, list[float]] = {"floor": [], "boto3": [], "dockyard": []}
    for _ in range(runs):
        results["floor"].append(timed(local_copy))
        results["boto3"].append(timed(boto3_file))
        results["dockyard"].append(timed(dockyard_file))
    med = {k: statistics.median(v) for k, v in results.items()}
    rows = [
        f"| File | local copy (floor) | {total_mb / med['floor']:.0f} MB/s | 1.0 |",
        f"| File | boto3 transfer manager, 8 threads (peer) | {total_mb / med['boto3']:.0f} MB/s | "
        f"{med['floor'] / med['boto3']:.2f} of floor |",
        f"| File | dockyard staging, 8 at a time | {total_mb / med['dockyard']:.0f} MB/s | "
        f"{med['boto3'] / med['dockyard']:.2f} of boto3 |",
    ]

    # Pipe: first byte and throughput through a FIFO, read on the host.
    def pipe_epoch() -> tuple[float, float]:
        folder = fresh("pipe")
        stream = Stream(
            host="algo-1",
            channel="train",
            folder=str(folder),
            items=tuple(o.uri for o in objects),
            attributes=None,
            host_index=0,
            host_count=1,
            sharded=False,
            seed=None,
            gzip=False,
            recordio=False,
        )
        began = time.perf_counter()
        streamer = pipe.Streamer(str(folder), "train", epoch_chunks(stream, endpoint), lambda _: None)
        streamer.start()
        with open(folder / "train_0", "rb") as f:
            f.read(1)
            first = time.perf_counter() - began
            got = 1
            while chunk := f.read(1 << 20):
                got += len(chunk)
        whole = time.perf_counter() - began
        streamer.stop()
        streamer.join()
        assert got == total_mb << 20
        return first, whole

    pipe_runs = [pipe_epoch() for _ in range(runs)]
    first = statistics.median(p[0] for p in pipe_runs)
    whole = statistics.median(p[1] for p in pipe_runs)
    rows += [
        f"| Pipe | time to first byte | {first * 1000:.0f} ms | {med['dockyard'] / first:.0f}x sooner than File |",
        f"| Pipe | throughput, one epoch | {total_mb / whole:.0f} MB/s | "
        f"{med['dockyard'] / whole:.2f} of File staging |",
    ]

    # FastFile: the large file through the s3fs mount.
    mountpoint = work / "mount"
    fuse.mount(f"s3://{BUCKET}/large", str(mountpoint), endpoint)
    try:
        big = mountpoint / "big.bin"

        def first_byte_fastfile() -> float:
            subprocess.run(["sync"], check=True)
            began = time.perf_counter()
            with open(big, "rb", buffering=0) as f:
                assert f.read(1) == large[:1]
            return time.perf_counter() - began

        def download_whole() -> float:
            return timed(lambda: s3.download_file(BUCKET, "large/big.bin", str(fresh("whole") / "big.bin")))

        fastfile_first = statistics.median(first_byte_fastfile() for _ in range(runs))
        whole_download = statistics.median(download_whole() for _ in range(runs))
        rng = random.Random(0)
        offsets = [rng.randrange(0, (LARGE_MB << 20) - 4096) for _ in range(50)]

        def random_reads(path: Path) -> float:
            with open(path, "rb", buffering=0) as f:
                began = time.perf_counter()
                for offset in offsets:
                    f.seek(offset)
                    assert f.read(4096) == large[offset : offset + 4096]
                return (time.perf_counter() - began) / len(offsets)

        fastfile_read = random_reads(big)
        local_read = random_reads(source / "big.bin")
    finally:
        fuse.unmount_all(str(work))
    rows += [
        f"| FastFile | time to first byte of the {LARGE_MB} MB file | {fastfile_first * 1000:.0f} ms | "
        f"{whole_download / fastfile_first:.0f}x sooner than downloading it ({whole_download:.2f} s) |",
        f"| FastFile | 4 KB read at a random offset | {fastfile_read * 1000:.1f} ms | "
        f"{fastfile_read / local_read:.0f}x a local file's ({local_read * 1e6:.0f} µs) |",
    ]
    notes = [
        "Pipe's figures include the streamer reading from S3 and writing the FIFO; File's staging figure is the "
        "time until the container could read its first byte.",
        "FastFile's random reads were cold (each at a new offset, 50 of them).",
    ]
    return rows, notes


if __name__ == "__main__":
    main()
