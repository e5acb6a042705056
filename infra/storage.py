"""Object storage through one interface: s3:// (any S3 endpoint) and file://.

Built on fsspec/s3fs. Functions take URIs and plain values and build their
filesystem inside, so Prefect tasks never carry a client.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import fsspec

from dockyard.errors import JobSpecError, TransientInfraError

CHUNK = 1 << 20  # bytes per streamed read
# A file:// object is written under a name with this ending, then renamed into place, so a
# reader never sees it half-written (as S3 never shows a PUT half-done): a checkpoint restored
# after its writer was killed mid-copy is the previous one whole, not an empty file.
PARTIAL_SUFFIX = ".dockyard-partial"


@dataclass(frozen=True)
class StoredObject:
    uri: str  # full URI of the object
    relative: str  # its path below the prefix's directory, kept on download
    size: int


def filesystem(uri: str, endpoint_url: str | None = None) -> Any:
    """The fsspec filesystem for `uri`; s3fs honours AWS_* credentials."""
    if uri.startswith("s3://"):
        import s3fs

        # One attempt per call in s3fs and botocore: a transient error surfaces to the
        # task's retry policy, which logs every retry and backs off with jitter.
        kwargs: dict[str, Any] = {
            "use_listings_cache": False,
            "skip_instance_cache": True,
            "config_kwargs": {"retries": {"max_attempts": 1, "mode": "standard"}},
        }
        if endpoint_url:
            kwargs["endpoint_url"] = endpoint_url
        fs = s3fs.S3FileSystem(**kwargs)
        fs.retries = 1
        return fs
    return fsspec.filesystem("file")


@functools.cache
def s3_client(endpoint_url: str | None) -> Any:
    """boto3's S3 client (thread-safe, kept per endpoint) for what s3fs does slowly: whole-object
    transfers. One attempt per call, as for s3fs: retries belong to the task's policy."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": 1, "mode": "standard"}, max_pool_connections=32)
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


def _transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(max_concurrency=4, num_download_attempts=1)


def _path(uri: str) -> str:
    if uri.startswith("s3://"):
        return uri[5:]
    if uri.startswith("file://"):
        return uri[7:]
    raise ValueError(f"unsupported URI {uri!r}: use s3:// or file://")


def _uri(like: str, path: str) -> str:
    """`path` as a URI of the same scheme as `like`."""
    return ("s3://" if like.startswith("s3://") else "file://") + path


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts)])


def relative_key(key: str, prefix: str) -> str:
    """Where an object matched by a key prefix lands below the channel folder.

    Objects in the prefix's "folder" keep their path below it
    (train/ + train/a/b.csv -> a/b.csv); the prefix itself as an object keeps
    its base name; other keys that merely start with the prefix
    (train -> train-2.csv) keep their path below the prefix's parent folder.
    """
    prefix = prefix.rstrip("/")
    if key.startswith(prefix + "/"):
        return key[len(prefix) + 1 :]
    if key == prefix:
        return key.rsplit("/", 1)[-1]
    return key[len(prefix.rsplit("/", 1)[0]) + 1 :] if "/" in prefix else key


def list_objects(uri: str, endpoint_url: str | None = None) -> list[StoredObject]:
    """Every object under `uri`, sorted by key.

    s3:// URIs are key prefixes, as in SageMaker: they match keys, not only
    folders (see `relative_key` for where each object lands). A file:// URI
    names a folder (everything below it) or a single file.
    """
    fs = filesystem(uri, endpoint_url)
    path = _path(uri)
    if not uri.startswith("s3://"):
        if os.path.isfile(path):
            return [StoredObject(uri, os.path.basename(path), os.path.getsize(path))]
        found = fs.find(path, detail=True) if os.path.isdir(path) else {}
    else:
        folder, _, name = path.rstrip("/").rpartition("/") if not path.endswith("/") else (path.rstrip("/"), "", "")
        try:
            found = fs.find(folder or path, prefix=name, detail=True) if name else fs.find(path, detail=True)
        except FileNotFoundError:
            return []
    return [
        StoredObject(_uri(uri, key), relative_key(key, path), int(info.get("size") or 0))
        for key, info in sorted(found.items())
        if key.startswith(path) and info.get("type") != "directory" and not key.endswith(PARTIAL_SUFFIX)
    ]


def check_readable_prefix(uri: str, field: str, endpoint_url: str | None = None) -> None:
    """Raise JobSpecError when nothing can be read at `uri`.

    Raises:
        JobSpecError: the location holds no objects or cannot be listed.
    """
    try:
        objects = list_objects(uri, endpoint_url)
    except PermissionError as exc:
        raise JobSpecError(f"{field}: cannot read {uri} ({exc}) — grant read access or fix the URI") from None
    if not objects:
        raise JobSpecError(f"{field}: no objects at {uri} — upload the data first or fix the URI")


def check_writable_location(uri: str, field: str, endpoint_url: str | None = None) -> None:
    """Raise JobSpecError when outputs clearly cannot be written under `uri`.

    Creates nothing: for S3 the bucket must exist; for file:// the nearest
    existing folder must be writable.

    Raises:
        JobSpecError: the bucket is missing or the folder is not writable.
    """
    path = _path(uri)
    if uri.startswith("s3://"):
        bucket = path.split("/", 1)[0]
        fs = filesystem(uri, endpoint_url)
        try:
            exists = fs.exists(bucket)
        except PermissionError:
            exists = False
        if not exists:
            raise JobSpecError(
                f"{field}: bucket '{bucket}' does not exist or is not accessible — create it or fix the URI"
            )
        return
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK):
        raise JobSpecError(
            f"{field}: cannot write under {uri} ({probe} is not a writable folder) — pick a folder you can write to"
        )


def download(obj: StoredObject, local_path: str, endpoint_url: str | None = None) -> None:
    """Copy one object to `local_path` and verify its size; a copy of the right
    size already there is kept, so a retried staging resumes.

    Raises:
        TransientInfraError: the copy came out at the wrong size.
    """
    if os.path.isfile(local_path) and os.path.getsize(local_path) == obj.size:
        return  # staged by an earlier attempt of the task
    os.makedirs(os.path.dirname(local_path), exist_ok=True)
    if obj.uri.startswith("s3://"):
        bucket, key = _path(obj.uri).split("/", 1)
        s3_client(endpoint_url).download_file(bucket, key, local_path, Config=_transfer_config())
    else:
        filesystem(obj.uri, endpoint_url).get_file(_path(obj.uri), local_path)
    got = os.path.getsize(local_path)
    if got != obj.size:
        raise TransientInfraError(f"{obj.uri}: downloaded {got} bytes, expected {obj.size}")


def upload_file(local_path: str, uri: str, endpoint_url: str | None = None) -> None:
    fs = filesystem(uri, endpoint_url)
    if uri.startswith("s3://"):
        fs.put_file(local_path, _path(uri))
        return
    with _whole(_path(uri)) as partial:
        fs.put_file(local_path, partial)


def open_beneath(root: str, relative: str) -> BinaryIO:
    """Open the regular file at root/relative for reading without following a link anywhere below
    `root`: a container writes the folders dockyard uploads from, and a link it leaves there names
    a file of the host's as the host sees it.

    Raises:
        OSError: a part of the path is a link (ELOOP, ENOTDIR), or the file is no regular file
            (EINVAL), or it is gone.
    """
    parts = [p for p in relative.split(os.sep) if p not in ("", ".")]
    if not parts or ".." in parts:
        raise OSError(errno.EINVAL, f"{relative}: not a path below the folder")
    folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=folder)
            os.close(folder)
            folder = inner
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder)  # a FIFO never blocks
    finally:
        os.close(folder)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{relative}: not a regular file")
    return os.fdopen(fd, "rb")


def upload_beneath(root: str, relative: str, uri: str, endpoint_url: str | None = None) -> tuple[int, int]:
    """Upload root/relative, opened as `open_beneath` opens it, to `uri`; returns its (size,
    mtime_ns) as uploaded.

    Raises:
        OSError: as open_beneath.
    """
    with open_beneath(root, relative) as f:
        st = os.fstat(f.fileno())
        if uri.startswith("s3://"):
            bucket, key = _path(uri).split("/", 1)
            s3_client(endpoint_url).upload_fileobj(f, bucket, key, Config=_transfer_config())
        else:
            with _whole(_path(uri)) as partial, open(partial, "wb") as out:
                shutil.copyfileobj(f, out)
    return st.st_size, st.st_mtime_ns


def write_text(uri: str, text: str, endpoint_url: str | None = None) -> None:
    fs = filesystem(uri, endpoint_url)
    if uri.startswith("s3://"):
        with fs.open(_path(uri), "w") as f:
            f.write(text)
        return
    with _whole(_path(uri)) as partial, open(partial, "w") as f:
        f.write(text)


@contextlib.contextmanager
def _whole(path: str) -> Iterator[str]:
    """A name beside `path` to write the file under; renamed to `path` once written (removed if not)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = f"{path}.{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}"
    try:
        yield partial
        os.replace(partial, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)


def delete(uri: str, endpoint_url: str | None = None) -> None:
    with contextlib.suppress(FileNotFoundError):
        filesystem(uri, endpoint_url).rm_file(_path(uri))


def exists(uri: str, endpoint_url: str | None = None) -> bool:
    """Whether an object is there."""
    return bool(filesystem(uri, endpoint_url).exists(_path(uri)))


def open_read(uri: str, endpoint_url: str | None = None) -> Any:
    """A binary file object streaming the object (one GET for s3://), nothing staged on disk."""
    if uri.startswith("s3://"):
        bucket, key = _path(uri).split("/", 1)
        return contextlib.closing(s3_client(endpoint_url).get_object(Bucket=bucket, Key=key)["Body"])
    return filesystem(uri, endpoint_url).open(_path(uri), "rb")


def read_bytes(uri: str, endpoint_url: str | None = None) -> bytes:
    with open_read(uri, endpoint_url) as f:
        return bytes(f.read())


def manifest_objects(uri: str, endpoint_url: str | None = None) -> list[StoredObject]:
    """The objects a ManifestFile names: `[{"prefix": "s3://b/p/"}, "key1", "sub/key2", ...]`,
    each kept at its path below the prefix.

    Raises:
        JobSpecError: the manifest is not such a list, or names an object that is not there.
    """
    try:
        entries = json.loads(read_bytes(uri, endpoint_url))
        prefix = entries[0]["prefix"]
        keys = [str(k) for k in entries[1:]]
    except (ValueError, KeyError, IndexError, TypeError):
        raise JobSpecError(
            f'{uri}: not a manifest — write a JSON list: [{{"prefix": "s3://bucket/prefix/"}}, "key1", ...]'
        ) from None
    fs = filesystem(prefix, endpoint_url)
    objects = []
    for key in keys:
        object_uri = prefix.rstrip("/") + "/" + key.lstrip("/")
        try:
            size = int(fs.info(_path(object_uri))["size"])
        except FileNotFoundError:
            raise JobSpecError(f"{uri}: names {object_uri}, which does not exist — fix the manifest") from None
        objects.append(StoredObject(object_uri, key.lstrip("/"), size))
    return objects
