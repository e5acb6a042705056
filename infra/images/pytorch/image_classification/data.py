"""The training and validation examples, in each of the image classifier's formats:

- application/x-image (or image/jpeg, image/png): image files listed by the
  .lst files of the CHANNEL_lst channel (index<TAB>label<TAB>path);
- application/x-recordio: MXNet im2rec .rec files, in File and FastFile mode,
  or the same bytes streamed through a Pipe channel's FIFOs;
- an augmented manifest (Pipe, RecordWrapperType RecordIO): records alternating
  an image's bytes and its label as JSON.

Files become a map-style Dataset (shuffled and split across hosts by a
sampler); a Pipe channel an IterableDataset over one FIFO, CHANNEL_0 the first
time it is read, CHANNEL_1 the next, ...
"""

from __future__ import annotations

import glob
import io
import json
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized
from typing import BinaryIO

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, RandomSampler, Subset
from torchvision import transforms as T

from image_classification.config import Channel, Config, TrainingError, cpu_count

IMAGE_TYPES = ("application/x-image", "image/jpeg", "image/png")
RECORDIO = "application/x-recordio"
MAGIC = 0xCED7230A
IR_HEADER = struct.Struct("<IfQQ")  # im2rec's header: flag, label, id, id2
FIFO_WAIT_SECONDS = 120.0
MEAN = {3: [0.485, 0.456, 0.406], 1: [0.449]}  # ImageNet's, and its average for grayscale
STD = {3: [0.229, 0.224, 0.225], 1: [0.226]}


def preprocessing(cfg: Config, train: bool) -> T.Compose:
    """PIL image to normalized tensor: resize (the shorter side to `resize`, else straight
    to image_shape), then crop; augmentation_type's random changes in training only."""
    channels, height, width = cfg.image_shape
    augment = cfg.augmentation_type if train else None
    steps: list = []
    if cfg.resize:
        steps += [T.Resize(cfg.resize), T.RandomCrop((height, width)) if augment else T.CenterCrop((height, width))]
    else:
        steps.append(T.RandomResizedCrop((height, width), scale=(0.6, 1.0)) if augment else T.Resize((height, width)))
    if augment:
        steps.append(T.RandomHorizontalFlip())
    if augment in ("crop_color", "crop_color_transform"):
        steps.append(T.ColorJitter(brightness=0.125, contrast=0.125, saturation=0.125, hue=0.1))
    if augment == "crop_color_transform":
        steps.append(T.RandomAffine(degrees=10, shear=6, scale=(0.9, 1.1)))
    return T.Compose([*steps, T.ToTensor(), T.Normalize(MEAN[channels], STD[channels])])


class Decoder:
    """Image bytes or file to a tensor; what is not an image raises TrainingError naming it."""

    def __init__(self, cfg: Config, train: bool, noted_small: Synchronized) -> None:
        self.mode = "L" if cfg.image_shape[0] == 1 else "RGB"
        self.size, self.resize = cfg.image_shape[1:], cfg.resize
        self.transform = preprocessing(cfg, train)
        self.noted_small = noted_small  # shared with the DataLoader workers: the note is printed once

    def __call__(self, source: str | bytes, where: str) -> torch.Tensor:
        try:
            with Image.open(source if isinstance(source, str) else io.BytesIO(source)) as opened:
                image = opened.convert(self.mode)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise TrainingError(f"{where}: not a readable JPEG or PNG image ({exc}); "
                                "replace the file or remove it from the data") from None
        if not self.resize and (image.height < self.size[0] or image.width < self.size[1]) and self._first_small():
            print(f"note: {where} is {image.width}x{image.height}, smaller than image_shape "
                  f"{self.size[0]}x{self.size[1]}: such images are scaled up", flush=True)
        return self.transform(image)

    def _first_small(self) -> bool:
        with self.noted_small.get_lock():
            first, self.noted_small.value = not self.noted_small.value, True
        return first


def check_label(value: float | str, num_classes: int, where: str) -> int:
    """A class number in 0..num_classes-1 (written as an integer or a whole float)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number.is_integer() or not 0 <= number < num_classes:
        raise TrainingError(f"{where}: label {value!r} is not a class number 0..{num_classes - 1} "
                            f"(num_classes={num_classes}); fix the label or raise num_classes")
    return int(number)


class ListedImages(Dataset):
    """application/x-image: image files with their labels."""

    def __init__(self, entries: list[tuple[str, int, str]], decode: Decoder) -> None:
        self.entries, self.decode = entries, decode  # (path, label, "file.lst line N")

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label, where = self.entries[i]
        return self.decode(path, f"image {path} ({where})"), label


def read_lists(images: Channel, lists: str, num_classes: int) -> list[tuple[str, int, str]]:
    """The entries of every .lst file under `lists`, paths relative to the image channel.
    A sharded channel holds only this host's share: images absent here are another host's.

    Raises:
        TrainingError: no .lst file, a malformed line, a bad label, an image not found.
    """
    files = sorted(glob.glob(f"{lists}/**/*.lst", recursive=True))
    if not files:
        raise TrainingError(f"channel {images.name}_lst has no .lst file in {lists}: give it one listing the "
                            "images as index<TAB>label<TAB>path lines")
    entries = []
    for lst in files:
        with open(lst, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{lst} line {number}"
                fields = line.rstrip("\r\n").split("\t")
                if len(fields) != 3:
                    raise TrainingError(f"{where}: expected 3 tab-separated fields (index, label, path), got "
                                        f"{len(fields)}; multi-label lists are not supported")
                label = check_label(fields[1], num_classes, where)
                path = os.path.join(images.folder, fields[2].strip())
                if os.path.isfile(path):
                    entries.append((path, label, where))
                elif not images.sharded:
                    raise TrainingError(f"{where}: image '{fields[2].strip()}' is not in channel {images.name} "
                                        f"(no file {path}); upload it or fix the path, which is relative to "
                                        "the channel's S3 prefix")
    if not entries:
        raise TrainingError(f"channel {images.name}: none of the images its .lst files list is here; "
                            "check the channel's S3 prefix against the paths in the .lst files")
    return entries


def read_record(stream: BinaryIO, where: str) -> bytes | None:
    """The next MXNet RecordIO record's payload, or None at the end of the stream. A record
    split into parts is joined as dmlc-core does: with the magic word between the parts."""
    parts: list[bytes] = []
    while True:
        head = stream.read(8)
        if not head and not parts:
            return None
        if len(head) < 8:
            raise TrainingError(f"{where}: the data ends inside a record (truncated upload?); recreate it with im2rec")
        magic, lrecord = struct.unpack("<II", head)
        if magic != MAGIC:
            raise TrainingError(f"{where}: not MXNet RecordIO (0x{magic:08x} where the record marker 0xced7230a "
                                "belongs); make the data with im2rec, or set the channel's ContentType to "
                                "application/x-image for image files")
        flag, length = lrecord >> 29, lrecord & ((1 << 29) - 1)
        data = stream.read(length + (-length % 4))
        if len(data) < length:
            raise TrainingError(f"{where}: the data ends inside a record (truncated upload?); recreate it with im2rec")
        parts.append(data[:length])
        if flag in (0, 3):
            return struct.pack("<I", MAGIC).join(parts)


def unpack_image(payload: bytes, num_classes: int, where: str) -> tuple[bytes, int]:
    """An im2rec record: its image bytes and its label."""
    if len(payload) < IR_HEADER.size:
        raise TrainingError(f"{where}: too short for an im2rec record ({len(payload)} bytes); recreate it with im2rec")
    flag, label, _, _ = IR_HEADER.unpack_from(payload)
    start = IR_HEADER.size
    if flag > 1:
        raise TrainingError(f"{where}: holds {flag} labels; multi-label records are not supported (or the record "
                            "is corrupt): pack one label per image")
    if flag == 1:
        (label,) = struct.unpack_from("<f", payload, start)
        start += 4
    return payload[start:], check_label(label, num_classes, where)


class RecordFiles(Dataset):
    """application/x-recordio in File and FastFile mode: .rec files, indexed by one pass over
    their record headers."""

    def __init__(self, paths: list[str], num_classes: int, decode: Decoder) -> None:
        self.index = [(path, offset, n) for path in paths for n, offset in enumerate(self._offsets(path))]
        self.num_classes, self.decode = num_classes, decode
        self._files: dict[tuple[int, str], BinaryIO] = {}  # per process: DataLoader workers open their own

    @staticmethod
    def _offsets(path: str) -> list[int]:
        offsets, position, size = [], 0, os.path.getsize(path)
        with open(path, "rb") as f:
            while position < size:
                f.seek(position)
                head = f.read(8)
                magic, lrecord = struct.unpack("<II", head) if len(head) == 8 else (0, 0)
                if magic != MAGIC:
                    raise TrainingError(f"{path} record {len(offsets)} (byte {position}): not MXNet RecordIO "
                                        "(bad or missing record marker); recreate the file with im2rec")
                length = lrecord & ((1 << 29) - 1)
                if lrecord >> 29 in (0, 1):  # a whole record, or a split record's first part
                    offsets.append(position)
                position += 8 + length + (-length % 4)
        if position > size:
            raise TrainingError(f"{path}: the last record is cut short (truncated upload?); recreate it with im2rec")
        return offsets

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, offset, number = self.index[i]
        key = (os.getpid(), path)
        if key not in self._files:
            self._files[key] = open(path, "rb")  # noqa: SIM115 - kept open for the process's life
        stream = self._files[key]
        stream.seek(offset)
        where = f"{path} record {number}"
        image, label = unpack_image(read_record(stream, where) or b"", self.num_classes, where)
        return self.decode(image, where), label


class PipeStream(IterableDataset):
    """One read of a Pipe channel: its FIFO read to the end. This host keeps every `world`-th
    example from `rank` (a FullyReplicated channel sends every host all of them)."""

    def __init__(self, path: str, manifest: bool, num_classes: int, decode: Decoder, rank: int, world: int) -> None:
        self.path, self.manifest, self.num_classes, self.decode = path, manifest, num_classes, decode
        self.rank, self.world = rank, world

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        deadline = time.monotonic() + FIFO_WAIT_SECONDS
        while not os.path.exists(self.path):
            if time.monotonic() > deadline:
                raise TrainingError(f"Pipe channel FIFO {self.path} did not appear within {FIFO_WAIT_SECONDS:.0f} s")
            time.sleep(0.2)
        with open(self.path, "rb") as stream:
            for number, (image, label, where) in enumerate(self._examples(stream)):
                if number % self.world == self.rank:
                    yield self.decode(image, where), label

    def _examples(self, stream: BinaryIO) -> Iterator[tuple[bytes, int, str]]:
        number = 0
        while True:
            where = f"{self.path} {'manifest line' if self.manifest else 'record'} {number}"
            payload = read_record(stream, where)
            if payload is None:
                return
            if self.manifest:
                yield payload, self._manifest_label(read_record(stream, where), where), where
            else:
                yield *unpack_image(payload, self.num_classes, where), where
            number += 1

    def _manifest_label(self, payload: bytes | None, where: str) -> int:
        try:
            value = json.loads(payload or b"")
            value = value[0] if isinstance(value, list) and len(value) == 1 else value
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ValueError(value)
        except (ValueError, UnicodeDecodeError):
            raise TrainingError(f"{where}: expected the image's record then its label as JSON (e.g. 3), got "
                                f"{(payload or b'nothing')[:40]!r}; set AttributeNames to ['source-ref', "
                                "'<your label attribute>'] in that order") from None
        return check_label(value, self.num_classes, where)


@dataclass
class Source:
    """A channel's examples: a Dataset (File, FastFile), or a Pipe channel's next FIFO."""

    channel: Channel
    dataset: Dataset | None
    decode: Decoder
    manifest: bool = False
    reads: int = 0  # FIFOs of this channel opened so far
    _loader: DataLoader | None = field(default=None, repr=False)

    def loader(self, cfg: Config, rank: int, world: int, train: bool, epoch: int, pin: bool) -> DataLoader:
        """This epoch's batches. A FullyReplicated channel is split across the hosts (training
        reshuffled each epoch); a sharded one is this host's already. A file dataset's loader
        and its worker processes are made once."""
        own = world == 1 or self.channel.sharded
        if self.dataset is None:
            path = f"{self.channel.folder}_{self.reads}"
            self.reads += 1
            stream = PipeStream(path, self.manifest, cfg.num_classes, self.decode, 0 if own else rank,
                                1 if own else world)
            return DataLoader(stream, batch_size=cfg.mini_batch_size, num_workers=1, drop_last=train, pin_memory=pin)
        if self._loader is None:
            dataset, sampler = self.dataset, None
            if train:
                sampler = RandomSampler(dataset) if own else DistributedSampler(dataset, world, rank, seed=0)
            elif not own:  # every example once across the hosts: no padding, unlike DistributedSampler
                dataset = Subset(dataset, range(rank, len(dataset), world))
            workers = min(8, cpu_count())
            self._loader = DataLoader(dataset, batch_size=cfg.mini_batch_size, sampler=sampler, num_workers=workers,
                                      persistent_workers=True, drop_last=train, pin_memory=pin)
        if isinstance(self._loader.sampler, DistributedSampler):
            self._loader.sampler.set_epoch(epoch)
        return self._loader


def open_source(channels: dict[str, Channel], name: str, cfg: Config, train: bool,
                noted_small: Synchronized) -> Source | None:
    """Channel `name`'s examples, or None when the job has no such channel. `noted_small`:
    whether an image smaller than image_shape has been noted (multiprocessing.Value("b")).

    Raises:
        TrainingError: the channel's content type, mode or files do not fit together.
    """
    channel = channels.get(name)
    if channel is None:
        return None
    decode = Decoder(cfg, train, noted_small)
    kind = channel.content_type or (IMAGE_TYPES[0] if f"{name}_lst" in channels else RECORDIO)
    if kind not in (*IMAGE_TYPES, RECORDIO) and not channel.record_wrapped:
        raise TrainingError(f"channel {name}: ContentType '{kind}' is not one the image classifier reads; use "
                            f"{IMAGE_TYPES[0]} (images with .lst files) or {RECORDIO} (im2rec .rec files)")
    if channel.mode == "Pipe":
        if kind in IMAGE_TYPES and not channel.record_wrapped:
            raise TrainingError(f"channel {name}: Pipe mode streams RecordIO; for {kind} with .lst files use "
                                "TrainingInputMode File or FastFile, or make .rec files with im2rec")
        return Source(channel, None, decode, manifest=channel.record_wrapped)
    if channel.record_wrapped:
        raise TrainingError(f"channel {name}: an augmented manifest (RecordWrapperType RecordIO) needs "
                            "TrainingInputMode Pipe; set it, or set RecordWrapperType to None")
    if kind in IMAGE_TYPES:
        if f"{name}_lst" not in channels:
            raise TrainingError(f"channel {name} holds images ({kind}), so it needs a channel named {name}_lst "
                                "with the .lst file listing them (index<TAB>label<TAB>path)")
        entries = read_lists(channel, channels[f"{name}_lst"].folder, cfg.num_classes)
        return Source(channel, ListedImages(entries, decode), decode)
    files = sorted(p for p in glob.glob(f"{channel.folder}/**/*", recursive=True)
                   if os.path.isfile(p) and not p.endswith((".idx", ".lst")))
    if not files:
        raise TrainingError(f"channel {name} ({RECORDIO}) has no .rec file in {channel.folder}: upload the "
                            "im2rec .rec files under the channel's S3 prefix")
    return Source(channel, RecordFiles(files, cfg.num_classes, decode), decode)
