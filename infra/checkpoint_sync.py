"""Checkpoint sync, as SageMaker does it, between a host folder and a URI.

- restore: everything under the URI is copied into the folder at start;
- while training: a file is uploaded once it is complete — when its writer
  closes it, or when it is renamed into place (inotify, via watchdog) — and a
  local deletion deletes the remote copy;
- final sync: after the container stops, the folder and the URI are
  reconciled, so nothing missed on the way is lost.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from typing import Any

from watchdog.events import DirCreatedEvent, FileClosedEvent, FileDeletedEvent, FileMovedEvent, FileSystemEventHandler
from watchdog.observers import Observer

from infra import storage

log = logging.getLogger("dockyard.checkpoints")
Signature = tuple[int, int]  # (size, mtime_ns)
NEW_FOLDER_SCAN_DELAY = 0.5  # seconds: by then the new folder's own watch is in place


def local_files(folder: str) -> dict[str, Signature]:
    """The regular files under `folder`: never a link (a container's link names a host file) nor a FIFO."""
    out = {}
    for root, _, files in os.walk(folder):  # never into a linked folder
        for name in files:
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                out[os.path.relpath(path, folder)] = (st.st_size, st.st_mtime_ns)
    return out


def plan_reconcile(
    local: dict[str, Signature], remote: set[str], synced: dict[str, Signature]
) -> tuple[list[str], list[str]]:
    """What a final sync must do: (paths to upload, remote paths to delete)."""
    uploads = sorted(p for p, sig in local.items() if p not in remote or synced.get(p) != sig)
    deletes = sorted(p for p in remote if p not in local)
    return uploads, deletes


class CheckpointSync:
    """Keeps one host's checkpoint folder and its URI in step; with `deletions` False (a processing
    job's Continuous output, which several instances may share), it only ever adds and replaces."""

    def __init__(
        self,
        folder: str,
        uri: str,
        endpoint_url: str | None,
        report: Callable[[str], None],
        deletions: bool = True,
        what: str = "checkpoints",
    ) -> None:
        self.folder, self.uri, self.endpoint_url, self.report = folder, uri.rstrip("/"), endpoint_url, report
        self.deletions, self.what = deletions, what
        self.synced: dict[str, Signature] = {}
        self.lock = threading.Lock()
        self.observer: Any = None
        self.uploads = 0

    def restore(self) -> int:
        """Copy every object under the URI into the folder; returns the count."""
        objects = storage.list_objects(self.uri + "/", self.endpoint_url)
        for obj in objects:
            path = os.path.join(self.folder, obj.relative)
            storage.download(obj, path, self.endpoint_url)
            st = os.stat(path)
            self.synced[obj.relative] = (st.st_size, st.st_mtime_ns)
        return len(objects)

    def _upload(self, relative: str) -> None:
        path = os.path.join(self.folder, relative)
        with self.lock:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                return
            signature = (st.st_size, st.st_mtime_ns)
            if self.synced.get(relative) == signature or not stat.S_ISREG(st.st_mode):
                return
            try:  # opened without following links: the container may have swapped one in since
                self.synced[relative] = storage.upload_beneath(
                    self.folder, relative, storage.join(self.uri, relative), self.endpoint_url
                )
            except (FileNotFoundError, NotADirectoryError):
                return  # gone, or a folder on its way became a link: nothing of the container's to upload
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.EINVAL, errno.ENXIO):  # a link, or no regular file (a socket)
                    log.warning("%s is no regular file of the folder's (a link?): not uploaded", relative)
                    return
                raise
            self.uploads += 1

    def _delete(self, relative: str) -> None:
        if not self.deletions:
            return
        with self.lock:
            if self.synced.pop(relative, None) is not None:
                storage.delete(storage.join(self.uri, relative), self.endpoint_url)

    def _safely(self, action: Callable[[str], None], relative: str) -> None:
        try:
            action(relative)
        except Exception as exc:  # noqa: BLE001 - the final sync catches up
            log.warning("checkpoint sync of %s failed (%s); the final sync retries it", relative, exc)

    def start(self) -> None:
        """Watch the folder and sync each completed, renamed or deleted file."""
        sync = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                if isinstance(event, DirCreatedEvent):
                    # A file may land in a new folder before its watch is in place.
                    threading.Timer(NEW_FOLDER_SCAN_DELAY, sync._scan, args=(os.fsdecode(event.src_path),)).start()
                if event.is_directory:
                    return
                if isinstance(event, FileClosedEvent):
                    sync._safely(sync._upload, sync._relative(event.src_path))
                elif isinstance(event, FileMovedEvent):
                    sync._safely(sync._delete, sync._relative(event.src_path))
                    sync._safely(sync._upload, sync._relative(event.dest_path))
                elif isinstance(event, FileDeletedEvent):
                    sync._safely(sync._delete, sync._relative(event.src_path))

        there = local_files(self.folder)  # before the watch: what the container wrote first (it starts first)
        self.observer = Observer()
        self.observer.schedule(Handler(), self.folder, recursive=True)
        self.observer.start()
        threading.Thread(target=self._scan, args=(self.folder, there), name="sync-scan", daemon=True).start()

    def _scan(self, folder: str, before: dict[str, Signature] | None = None) -> None:
        """Upload the files of a new folder (or those `before` lists, found there before the watch
        began) that sit still: a file still being written changes between the two looks, and its
        close uploads it later; a file made once the watch is on is the watch's alone."""
        before = local_files(folder) if before is None else before
        time.sleep(NEW_FOLDER_SCAN_DELAY)
        for relative, signature in local_files(folder).items():
            if before.get(relative) == signature:
                self._safely(self._upload, self._relative(os.path.join(folder, relative)))

    def _relative(self, path: str | bytes) -> str:
        return os.path.relpath(os.fsdecode(path), self.folder)

    def stop(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=10)
            self.observer = None

    def final_sync(self) -> tuple[int, int]:
        """Reconcile folder and URI; returns (uploaded, deleted)."""
        self.stop()
        remote = {o.relative for o in storage.list_objects(self.uri + "/", self.endpoint_url)}
        uploads, deletes = plan_reconcile(local_files(self.folder), remote, self.synced)
        deletes = deletes if self.deletions else []
        for relative in uploads:
            self.synced.pop(relative, None)
            self._upload(relative)
        for relative in deletes:
            storage.delete(storage.join(self.uri, relative), self.endpoint_url)
        return len(uploads), len(deletes)
