"""Pipe, FastFile, file system channels, manifests, compression, RecordIO and shuffling,
on real Docker and moto's S3 server over HTTP; a probe container reads each channel
and reports exactly what it got."""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import (
    channel,
    local,
    members,
    new_bucket,
    probe_job,
    run_job,
    s3_client,
    wait_for_status,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DOCKYARD_S3_ENDPOINT_URL", s3_endpoint)
    return new_bucket(s3_endpoint)


def put(endpoint: str, bucket: str, objects: dict[str, bytes]) -> None:
    client = s3_client(endpoint)
    for key, body in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)


def pipe_channel(name: str, uri: str, **options: Any) -> dict[str, Any]:
    entry = channel(name, uri, options.pop("distribution", "FullyReplicated"))
    entry["data_source"]["s3_data_source"].update(options.pop("source", {}))
    return {**entry, "input_mode": "Pipe", **options}


def report(body: dict[str, Any], name: str) -> Any:
    assert body["TrainingJobStatus"] == "Completed", body.get("FailureReason")
    return json.loads(members(local(body["ModelArtifacts"]["S3ModelArtifacts"]))[name])


def unframe(data: bytes) -> list[bytes]:
    """RecordIO records back out of a stream (single-part records)."""
    out, at = [], 0
    while at < len(data):
        magic, header = struct.unpack_from("<II", data, at)
        assert magic == 0xCED7230A and header >> 29 == 0
        length = header & ((1 << 29) - 1)
        out.append(data[at + 8 : at + 8 + length])
        at += 8 + length + (-length % 4)
    return out


def test_pipe_channels_stream_each_epoch_in_key_order_decompressed_and_wrapped(
    home: str, s3_endpoint: str, bucket: str, test_images: dict[str, str]
) -> None:
    parts = {f"plain/part-{i}.txt": f"<{i}>".encode() * 3 for i in range(4)}
    put(s3_endpoint, bucket, parts)
    put(s3_endpoint, bucket, {k.replace("plain/", "gz/") + ".gz": gzip.compress(v) for k, v in parts.items()})
    channels = [
        pipe_channel("plain", f"s3://{bucket}/plain/"),
        pipe_channel("gz", f"s3://{bucket}/gz/", compression_type="Gzip"),
        pipe_channel("rio", f"s3://{bucket}/plain/", record_wrapper_type="RecordIO"),
        channel("file", f"s3://{bucket}/plain/"),  # a File channel beside them: its own true mode
    ]
    job = probe_job(
        home, test_images["probe"], "pipe", channels, hyperparameters={"channels": "plain,gz,rio", "epochs": "3"}
    )
    body = run_job(job)
    reported = report(body, "pipe-algo-1.json")
    config = reported.pop("_inputdataconfig")
    assert {c: config[c]["TrainingInputMode"] for c in config} == {
        "plain": "Pipe",
        "gz": "Pipe",
        "rio": "Pipe",
        "file": "File",
    }
    assert config["gz"]["CompressionType"] == "Gzip" and config["rio"]["RecordWrapperType"] == "RecordIO"
    assert sorted(reported.pop("_staged")) == [f"file/part-{i}.txt" for i in range(4)]
    got = {c: [e.encode("latin-1") for e in epochs] for c, epochs in reported.items()}
    whole = b"".join(parts[k] for k in sorted(parts))
    assert got["plain"] == [whole] * 3 and got["gz"] == [whole] * 3
    assert [unframe(e) for e in got["rio"]] == [[parts[k] for k in sorted(parts)]] * 3
    log = (Path(home) / "jobs" / job["training_job_name"] / "job.log").read_text()
    assert "Pipe channel plain: epoch 2 sent" in log


def test_shuffled_pipe_epochs_differ_repeat_by_seed_and_shards_are_disjoint_and_complete(
    home: str, s3_endpoint: str, bucket: str, test_images: dict[str, str]
) -> None:
    parts = {f"rows/{i:02d}": f"[{i:02d}]".encode() for i in range(12)}
    put(s3_endpoint, bucket, parts)
    shuffled = pipe_channel("train", f"s3://{bucket}/rows/", shuffle_config={"seed": 7}, distribution="ShardedByS3Key")

    def run(seed_channel: dict[str, Any]) -> list[list[list[str]]]:
        body = run_job(
            probe_job(
                home,
                test_images["probe"],
                "pipe",
                [seed_channel],
                instance_count=2,
                hyperparameters={"channels": "train", "epochs": "3"},
            )
        )
        hosts = [report(body, f"pipe-algo-{h}.json")["train"] for h in (1, 2)]
        return [[[e[i : i + 4] for i in range(0, len(e), 4)] for e in host] for host in hosts]

    first = run(shuffled)
    everything = sorted(f"[{i:02d}]" for i in range(12))
    for epoch in range(3):
        one, two = first[0][epoch], first[1][epoch]
        assert not set(one) & set(two) and sorted(one + two) == everything  # disjoint and complete
    orders = [first[0][e] + first[1][e] for e in range(3)]
    assert len({tuple(o) for o in orders}) == 3  # a new order each epoch
    assert run(shuffled) == first  # and the same orders again for the same seed


def test_a_reader_that_stops_early_or_never_reads_leaves_no_streamer(
    home: str, s3_endpoint: str, bucket: str, test_images: dict[str, str]
) -> None:
    from infra import pipe

    put(s3_endpoint, bucket, {"big/blob": b"x" * (8 << 20)})
    peek = probe_job(
        home,
        test_images["probe"],
        "pipe",
        [pipe_channel("train", f"s3://{bucket}/big/")],
        hyperparameters={"channels": "train", "epochs": "2", "peek": "10"},
    )
    got = report(run_job(peek), "pipe-algo-1.json")["train"]
    assert [len(e) for e in got] == [10, 8 << 20]  # epoch 1 whole after epoch 0 was dropped early
    never = probe_job(home, test_images["probe"], "noop", [pipe_channel("train", f"s3://{bucket}/big/")])
    assert run_job(never)["TrainingJobStatus"] == "Completed"
    assert pipe.running(peek["training_job_name"]) == [] and pipe.running(never["training_job_name"]) == []
    log = (Path(home) / "jobs" / peek["training_job_name"] / "job.log").read_text()
    assert "Pipe channel train: epoch 0 ended early" in log


def test_an_object_that_cannot_be_streamed_fails_the_job_naming_the_channel(
    home: str, s3_endpoint: str, bucket: str, test_images: dict[str, str]
) -> None:
    put(s3_endpoint, bucket, {"vanishing/a": b"a", "vanishing/b": b"b"})
    job = probe_job(
        home,
        test_images["probe"],
        "pipe",
        [pipe_channel("train", f"s3://{bucket}/vanishing/")],
        hyperparameters={"channels": "train", "delay": "20"},  # time enough to see Training on a loaded machine
    )

    def delete_once_training() -> None:  # listed at staging, gone when the container reads
        wait_for_status(home, job["training_job_name"], "Training")
        s3_client(s3_endpoint).delete_object(Bucket=bucket, Key="vanishing/b")

    deleter = threading.Thread(target=delete_once_training)
    deleter.start()
    body = run_job(job)
    deleter.join()
    assert body["TrainingJobStatus"] == "Failed"
    assert body["FailureReason"].startswith("ClientError: Pipe channel train, epoch 0: ")
    assert "vanishing/b" in body["FailureReason"] or "NoSuchKey" in body["FailureReason"]


def test_manifests_name_the_objects_and_augmented_manifests_stream_attributes_as_records(
    home: str, s3_endpoint: str, bucket: str, test_images: dict[str, str]
) -> None:
    put(s3_endpoint, bucket, {"data/a.txt": b"A", "data/sub/b.txt": b"BB", "data/c.txt": b"not listed"})
    manifest = [{"prefix": f"s3://{bucket}/data/"}, "sub/b.txt", "a.txt"]
    lines = [
        {"source-ref": f"s3://{bucket}/data/a.txt", "class": 0, "ignored": "x"},
        {"source-ref": f"s3://{bucket}/data/sub/b.txt", "class": 1},
    ]
    put(
        s3_endpoint,
        bucket,
        {"m/manifest.json": json.dumps(manifest).encode(), "m/aug.jsonl": "\n".join(map(json.dumps, lines)).encode()},
    )
    as_file = channel("listed", f"s3://{bucket}/m/manifest.json")
    as_file["data_source"]["s3_data_source"]["s3_data_type"] = "ManifestFile"
    as_pipe = pipe_channel("piped", f"s3://{bucket}/m/manifest.json", source={"s3_data_type": "ManifestFile"})
    augmented = pipe_channel(
        "aug",
        f"s3://{bucket}/m/aug.jsonl",
        source={"s3_data_type": "AugmentedManifestFile", "attribute_names": ["source-ref", "class"]},
    )
    body = run_job(
        probe_job(
            home, test_images["probe"], "pipe", [as_file, as_pipe, augmented], hyperparameters={"channels": "piped,aug"}
        )
    )
    got = report(body, "pipe-algo-1.json")
    assert got["piped"] == ["BBA"]  # the manifest's objects, in its order
    assert unframe(got["aug"][0].encode("latin-1")) == [b"A", b"0", b"BB", b"1"]
    assert got["_staged"] == {"listed/sub/b.txt": 2, "listed/a.txt": 1}  # File mode: exactly the listed objects


def test_fastfile_mounts_read_on_demand_and_file_system_channels_mount_ro_or_rw(
    home: str, s3_endpoint: str, bucket: str, test_images: dict[str, str], tmp_path: Path
) -> None:
    big = bytes(range(256)) * (64 << 10)  # 16 MB
    put(s3_endpoint, bucket, {"ff/big.bin": big, "ff/sub/small.txt": b"small"})
    local_ff = tmp_path / "local-ff"
    (local_ff / "d").mkdir(parents=True)
    (local_ff / "d" / "x.txt").write_text("x")
    shared_ro, shared_rw = tmp_path / "efs-ro", tmp_path / "fsx-rw"
    shared_ro.mkdir()
    shared_rw.mkdir()
    (shared_ro / "r.txt").write_text("read me")

    def system(name: str, path: Path, access: str, kind: str) -> dict[str, Any]:
        return {
            "channel_name": name,
            "data_source": {
                "file_system_data_source": {
                    "file_system_id": f"fs-{name}",
                    "file_system_access_mode": access,
                    "file_system_type": kind,
                    "directory_path": str(path),
                }
            },
        }

    job = probe_job(
        home,
        test_images["probe"],
        "read",
        [
            {**channel("fast", f"s3://{bucket}/ff/"), "input_mode": "FastFile"},
            {**channel("localfast", f"file://{local_ff}"), "input_mode": "FastFile"},
            system("efs", shared_ro, "ro", "EFS"),
            system("fsx", shared_rw, "rw", "FSxLustre"),
        ],
    )
    body = run_job(job)
    got = report(body, "read-algo-1.json")
    assert got["files"]["fast/big.bin"] == [hashlib.sha256(big).hexdigest(), len(big)]
    assert got["files"]["fast/sub/small.txt"][1] == 5
    assert got["files"]["localfast/d/x.txt"][1] == 1 and got["files"]["efs/r.txt"][1] == 7
    assert got["writable"] == {"fast": False, "localfast": False, "efs": False, "fsx": True}
    assert (shared_rw / ".probe").exists()  # a rw file system channel writes through to the host
    modes = {c: entry["TrainingInputMode"] for c, entry in got["inputdataconfig"].items()}
    assert modes == {"fast": "FastFile", "localfast": "FastFile", "efs": "File", "fsx": "File"}
    from infra import fuse

    assert fuse.mounts_under(str(Path(home) / "scratch")) == []  # unmounted when the job ended
