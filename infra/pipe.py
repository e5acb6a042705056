"""Pipe mode: a channel streamed through FIFOs, one per epoch, straight from storage.

For channel C of a host, input/data/C_0 is a FIFO when the container starts.
A streamer thread opens it for writing once the container opens it for
reading, writes the epoch's bytes (read from storage in 1 MB ranges, never
staged on disk; Gzip objects decompressed on the way; each object, or each
augmented-manifest attribute, framed as a RecordIO record when asked), creates
C_1 and closes C_0, so the reader meets end-of-file with the next epoch's FIFO
already there. It goes on, epoch after epoch, until the job's containers are
gone. A reader that closes early only ends that epoch; a reader that stops
reading, or a container that exits, never leaves the thread stuck: every wait
is bounded and checks the stop signal.
"""

from __future__ import annotations

import errno
import json
import os
import select
import struct
import threading
import time
import zlib
from collections.abc import Callable, Generator, Iterator
from typing import Any

from infra import storage
from infra.retry import is_transient

RECORDIO_MAGIC = 0xCED7230A
RECORDIO_MAX = (1 << 29) - 1  # longest payload one RecordIO header can describe
POLL_SECONDS = 0.05
WRITE_WAIT_SECONDS = 0.2
JOIN_SECONDS = 10.0
OPEN_RETRY_SECONDS = (1.0, 2.0, 4.0)


def recordio(payload: bytes) -> bytes:
    """`payload` framed as MXNet RecordIO: magic, flag and length, data padded to 4 bytes;
    longer payloads are split into start / middle / end parts."""
    parts = [payload[i : i + RECORDIO_MAX] for i in range(0, len(payload), RECORDIO_MAX)] or [b""]
    out = bytearray()
    for i, part in enumerate(parts):
        flag = 0 if len(parts) == 1 else 1 if i == 0 else 3 if i == len(parts) - 1 else 2
        out += struct.pack("<II", RECORDIO_MAGIC, (flag << 29) | len(part)) + part
        out += b"\0" * (-len(part) % 4)
    return bytes(out)


def _open(uri: str, endpoint_url: str | None) -> Any:
    """Open an object for streaming; a transient error is retried (1, 2, 4 s) before any byte is sent."""
    for wait in OPEN_RETRY_SECONDS:
        try:
            return storage.open_read(uri, endpoint_url)
        except Exception as exc:
            if not is_transient(exc):
                raise
            time.sleep(wait)
    return storage.open_read(uri, endpoint_url)


def object_chunks(uri: str, gzip: bool, endpoint_url: str | None) -> Iterator[bytes]:
    """One object's bytes, decompressed on the way when it is Gzip."""
    inflate = zlib.decompressobj(wbits=31) if gzip else None
    with _open(uri, endpoint_url) as f:
        while chunk := f.read(storage.CHUNK):
            if inflate is None:
                yield chunk
                continue
            while chunk:  # a .gz may hold several members, one after another
                yield inflate.decompress(chunk)
                chunk = inflate.unused_data
                if chunk:
                    inflate = zlib.decompressobj(wbits=31)
        if inflate is not None:
            yield inflate.flush()


def records_of_line(line: str, attributes: list[str], endpoint_url: str | None) -> Iterator[bytes]:
    """An augmented manifest line's attributes, in the order asked, each one RecordIO record:
    a `*-ref` attribute's object, any other attribute's value as JSON."""
    entry = json.loads(line)
    for name in attributes:
        value = entry[name]
        payload = storage.read_bytes(value, endpoint_url) if name.endswith("-ref") else json.dumps(value).encode()
        yield recordio(payload)


class Streamer(threading.Thread):
    """Feeds one channel of one host, epoch after epoch, until stopped."""

    def __init__(
        self,
        folder: str,
        channel: str,
        epoch_chunks: Callable[[int], Generator[bytes, None, None]],
        report: Callable[[str], None],
    ) -> None:
        super().__init__(name=f"pipe-{channel}", daemon=True)
        self.folder, self.channel, self.epoch_chunks, self.report = folder, channel, epoch_chunks, report
        self.stopped = threading.Event()
        self.error: str | None = None  # why an epoch could not be sent whole; the job fails with it
        os.makedirs(folder, exist_ok=True)
        os.mkfifo(self.fifo(0))  # there when `train` starts

    def fifo(self, epoch: int) -> str:
        return os.path.join(self.folder, f"{self.channel}_{epoch}")

    def run(self) -> None:
        epoch = 0
        while not self.stopped.is_set():
            fd = self._open(self.fifo(epoch))
            if fd is None:
                return
            sent, whole = 0, True
            chunks = self.epoch_chunks(epoch)
            try:
                for chunk in chunks:
                    if not self._write(fd, chunk):
                        whole = False
                        break
                    sent += len(chunk)
            except Exception as exc:  # noqa: BLE001 - the job fails with it (see `failure`)
                whole = False
                self.error = f"Pipe channel {self.channel}, epoch {epoch}: {type(exc).__name__}: {exc}"
                self.report(f"error: {self.error}")
            finally:
                chunks.close()  # closes the object being read
            os.mkfifo(self.fifo(epoch + 1))  # before the reader meets end-of-file
            os.close(fd)
            self.report(
                f"Pipe channel {self.channel}: epoch {epoch} {'sent' if whole else 'ended early after'} "
                f"{sent / 1e6:.1f} MB"
            )
            epoch += 1

    def _open(self, path: str) -> int | None:
        """Open the FIFO for writing once a reader has it open; None once stopped."""
        while not self.stopped.is_set():
            try:
                return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                    raise
            self.stopped.wait(POLL_SECONDS)
        return None

    def _write(self, fd: int, data: bytes) -> bool:
        """Write all of `data`; False when the reader went away or the streamer was stopped."""
        view = memoryview(data)
        while view:
            if self.stopped.is_set():
                return False
            _, ready, _ = select.select([], [fd], [], WRITE_WAIT_SECONDS)
            if not ready:
                continue
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                continue
            except BrokenPipeError:
                return False
        return True

    def stop(self) -> None:
        self.stopped.set()


_streamers: dict[str, list[Streamer]] = {}
_lock = threading.Lock()


def start(job: str, streamer: Streamer) -> None:
    with _lock:
        _streamers.setdefault(job, []).append(streamer)
    streamer.start()


def stop_all(job: str) -> int:
    """Stop and join the job's streamers; returns how many there were."""
    with _lock:
        streamers = _streamers.pop(job, [])
    for s in streamers:
        s.stop()
    for s in streamers:
        s.join(JOIN_SECONDS)
    return len(streamers)


def failure(job: str) -> str | None:
    """Why one of the job's streamers could not send an epoch whole, if one could not."""
    with _lock:
        return next((s.error for s in _streamers.get(job, []) if s.error), None)


def running(job: str) -> list[Any]:
    with _lock:
        return [s for s in _streamers.get(job, []) if s.is_alive()]
