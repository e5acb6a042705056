"""file:// storage: an object is never seen half-written, as S3 never shows a PUT half-done."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from infra import storage

SIZE = 16 << 20


def test_a_file_upload_is_seen_whole_or_not_at_all_and_listings_skip_partial_files(tmp_path: Path) -> None:
    local = tmp_path / "checkpoint.bin"
    local.write_bytes(os.urandom(SIZE))
    target = tmp_path / "remote" / "checkpoints" / "checkpoint.bin"
    seen: set[int] = set()
    done = threading.Event()

    def watch() -> None:  # as a restore after a killed writer would read it
        while not done.is_set():
            try:
                seen.add(target.stat().st_size)
            except FileNotFoundError:
                seen.add(-1)

    reader = threading.Thread(target=watch)
    reader.start()
    try:
        for _ in range(5):
            storage.upload_file(str(local), target.as_uri())
    finally:
        done.set()
        reader.join()
    assert seen <= {-1, SIZE}, f"sizes seen while uploading: {sorted(seen)}"
    (target.parent / f"stale{storage.PARTIAL_SUFFIX}").write_bytes(b"half")  # a writer killed mid-copy
    listed = storage.list_objects((tmp_path / "remote" / "checkpoints").as_uri())
    assert [o.relative for o in listed] == ["checkpoint.bin"]
    storage.write_text((tmp_path / "remote" / "job.json").as_uri(), "{}")
    assert (tmp_path / "remote" / "job.json").read_text() == "{}"
    assert not list((tmp_path / "remote").glob(f"*{storage.PARTIAL_SUFFIX}"))
