"""FastFile mode: an S3 prefix mounted read-only with s3fs-fuse; files are fetched as they are read.

Why s3fs-fuse: it is packaged by Debian (`apt-get install s3fs`) and maintained
for over a decade, speaks any S3-compatible endpoint (path-style requests for
MinIO, Ceph or moto), and serves reads with ranged GETs, so the first bytes of
a large file arrive long before the whole file would have downloaded.
(mountpoint-s3 is not packaged here; fsspec's FUSE layer is pure Python.)
The mount lives on the host and is bind-mounted into the containers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

from dockyard.errors import InfraError

MOUNT_WAIT_SECONDS = 15.0


def available() -> bool:
    return shutil.which("s3fs") is not None and os.path.exists("/dev/fuse")


def _credentials_env() -> dict[str, str]:
    """boto3's credentials as s3fs reads them from its environment (never on disk, never logged)."""
    import boto3

    found = boto3.session.Session().get_credentials()
    if found is None:
        return {}
    frozen = found.get_frozen_credentials()
    env = {"AWSACCESSKEYID": frozen.access_key, "AWSSECRETACCESSKEY": frozen.secret_key}
    if frozen.token:
        env["AWSSESSIONTOKEN"] = frozen.token
    return env


def mount(uri: str, mountpoint: str, endpoint_url: str | None) -> None:
    """Mount the s3:// prefix `uri` read-only at `mountpoint`.

    Raises:
        InfraError: s3fs failed or the mount did not appear.
    """
    bucket, _, prefix = uri[5:].partition("/")
    source = f"{bucket}:/{prefix.strip('/')}" if prefix.strip("/") else bucket
    options = ["ro", "allow_other", "umask=0222", f"url={endpoint_url or 'https://s3.amazonaws.com'}"]
    if endpoint_url:
        options.append("use_path_request_style")
    os.makedirs(mountpoint, exist_ok=True)
    result = subprocess.run(
        ["s3fs", source, mountpoint, "-o", ",".join(options)],
        env={**os.environ, **_credentials_env()},
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise InfraError(f"mounting {uri} with s3fs failed: {result.stderr.strip()[-500:]}")
    deadline = time.monotonic() + MOUNT_WAIT_SECONDS
    while not os.path.ismount(mountpoint):
        if time.monotonic() > deadline:
            raise InfraError(f"s3fs did not mount {uri} at {mountpoint} within {MOUNT_WAIT_SECONDS:.0f} s")
        time.sleep(0.05)


def mounts_under(folder: str) -> list[str]:
    """FUSE mounts at or below `folder`, deepest first."""
    root = os.path.realpath(folder)
    with open("/proc/mounts") as table:
        points = [line.split()[1].encode().decode("unicode_escape") for line in table if " fuse" in line]
    return sorted((p for p in points if p == root or p.startswith(root + "/")), key=len, reverse=True)


def unmount_all(folder: str) -> list[str]:
    """Unmount every FUSE mount below `folder`; returns those still mounted (lazily detached)."""
    left = []
    for point in mounts_under(folder):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)
        if os.path.ismount(point):
            left.append(point)
    return left
