"""Each instance's disk: its folder (the container's /opt/ml input, model, output and
checkpoints) on a file system of `volume_size_in_gb`.

A sparse image file beside the folder, formatted ext4 and loop-mounted on it
(nodev, nosuid): a job fills its own volume and no more of the host's disk, and
the image takes host space only as the job writes. It goes with the instance.
Mounting needs root and mkfs.ext4 (e2fsprogs); without them, jobs run with no
volume limit and their log says why. (The container's writable layer, outside
/opt/ml, is the engine's to limit: overlay2 can only on XFS with project quotas.)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess

GIB = 1024**3
IMAGE_SUFFIX = ".volume"
FULL_FRACTION = 0.005  # free space under this share of the volume (or FULL_BYTES) counts as full
FULL_BYTES = 4 * 1024**2


def unavailable() -> str | None:
    """Why volumes cannot be made on this machine, or None when they can."""
    if os.geteuid() != 0:
        return "dockyard does not run as root, and mounting a volume needs it"
    for tool in ("mkfs.ext4", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install e2fsprogs mount)"
    return None


def create(folder: str, size_gb: int) -> str | None:
    """Mount a fresh volume of `size_gb` GiB on `folder`; returns why not, or None when mounted."""
    image = folder.rstrip("/") + IMAGE_SUFFIX
    os.makedirs(folder, exist_ok=True)
    # A volume left on the folder by a half-done attempt comes off first: its image is about to be remade.
    _unmount(folder)
    if os.path.ismount(folder):
        return f"{folder} is still mounted and cannot get a fresh volume"
    try:
        with open(image, "wb") as f:
            f.truncate(size_gb * GIB)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.remove(image)
        return f"cannot make the {size_gb} GB image {image}: {exc.strerror}"
    steps = (
        ["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1", image],
        ["mount", "-o", "loop,nodev,nosuid", image, folder],
    )
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            os.remove(image)
            return f"{step[0]} failed: {(done.stderr or done.stdout).strip()[-300:]}"
    with contextlib.suppress(OSError):
        os.rmdir(os.path.join(folder, "lost+found"))
    return None


def size_gb(folder: str) -> int | None:
    """The size of the volume mounted on `folder` in GiB, or None when it has none."""
    image = folder.rstrip("/") + IMAGE_SUFFIX
    if not (os.path.ismount(folder) and os.path.isfile(image)):
        return None
    return round(os.path.getsize(image) / GIB)


def free_bytes(folder: str) -> int:
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize


def is_full(folder: str) -> bool:
    """True when the volume on `folder` has (almost) no room left."""
    gb = size_gb(folder)
    return gb is not None and free_bytes(folder) < max(FULL_BYTES, FULL_FRACTION * gb * GIB)


def unmount_all(root: str) -> list[str]:
    """Unmount and delete every volume of the instances under `root`; returns the folders still
    mounted. A busy one is detached lazily: it counts as gone, and its image's space comes back
    once the last user lets go."""
    left: list[str] = []
    if not os.path.isdir(root):
        return left
    for name in sorted(os.listdir(root)):
        if not name.endswith(IMAGE_SUFFIX):
            continue
        image = os.path.join(root, name)
        folder = image.removesuffix(IMAGE_SUFFIX)
        _unmount(folder)
        if os.path.ismount(folder):
            left.append(folder)
        else:
            os.remove(image)
    return left


def _unmount(folder: str) -> None:
    """Take every volume off `folder` (one mounted over another too); a busy one lazily."""
    for _ in range(3):
        if os.path.ismount(folder) and subprocess.run(["umount", folder], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", folder], capture_output=True)
