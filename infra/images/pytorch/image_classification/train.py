"""`train`: SageMaker's built-in image classification algorithm, on PyTorch.

Reads the job from /opt/ml/input, trains torchvision's ResNet of num_layers
(data-parallel over the job's hosts), prints SageMaker's metric lines
(`Epoch[3] Validation-accuracy=0.912500`, epochs counted from 0), writes
checkpoint-epoch-N.pt every checkpoint_frequency epochs and resumes from the
newest, and saves the model to /opt/ml/model (see model.py). What went wrong
goes to /opt/ml/output/failure.

Choices where SageMaker's MXNet algorithm leaves room:
- mini_batch_size is per host, as in SageMaker: the global batch is
  hosts x mini_batch_size. Each host trains on one device, its first GPU or
  else its CPUs; further GPUs of a host are left idle.
- precision_dtype=float16 is mixed precision (autocast + GradScaler) on a GPU;
  on a CPU host the job trains in float32 and says so.
- Train-accuracy and Validation-accuracy count every host's examples.
- A Pipe channel's FIFOs are numbered by the reads of this run (CHANNEL_0
  first, also after resuming from a checkpoint), as dockyard's streamer
  writes them.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from image_classification import checkpoint, data, distributed, model
from image_classification.config import DATA_DIR, Config, Job, TrainingError, cpu_count, load_job, write_failure
from image_classification.distributed import World

REPORT_EVERY = 20  # batches between progress lines


def stop_on_sigterm() -> None:
    """SIGTERM (a stop request, a spot interruption) ends the process at once, even while the
    main thread is inside a long native call: the signal goes through a pipe a thread waits on."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, lambda *_: None)

    def forget() -> None:  # DataLoader workers: their SIGTERM (from the loader) is theirs alone
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def wait() -> None:
        while os.read(read_end, 1) != bytes([signal.SIGTERM]):
            pass  # other handled signals (SIGCHLD) share the pipe
        print("SIGTERM: stopping", flush=True)
        os._exit(143)

    os.register_at_fork(after_in_child=forget)
    threading.Thread(target=wait, name="sigterm", daemon=True).start()


@dataclass
class EarlyStopping:
    """SageMaker's rule: after early_stopping_min_epochs, stop once validation accuracy has not
    improved (relatively, by at least early_stopping_tolerance) for early_stopping_patience epochs."""

    best: float | None = None
    stale: int = 0  # epochs since the last improvement

    def update(self, cfg: Config, epoch: int, accuracy: float | None) -> bool:
        if accuracy is None:
            return False
        best, tolerance = self.best, cfg.early_stopping_tolerance
        if best is None or (accuracy > best and (best == 0 or (accuracy - best) / best >= tolerance)):
            self.best, self.stale = accuracy, 0
        else:
            self.stale += 1
        return (cfg.early_stopping and epoch + 1 >= cfg.early_stopping_min_epochs
                and self.stale >= cfg.early_stopping_patience)


class Tally:
    """Correct predictions (top-1, top-k) out of all, summed on the device without syncing."""

    def __init__(self, device: torch.device, top_k: int | None) -> None:
        self.top_k, self.sums = top_k, torch.zeros(3, dtype=torch.float64, device=device)

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.sums[0] += (logits.argmax(1) == labels).sum()
        if self.top_k:
            self.sums[1] += (logits.topk(self.top_k, 1).indices == labels[:, None]).any(1).sum()
        self.sums[2] += len(labels)

    def accuracy(self) -> float:
        correct, _, count = self.sums.tolist()
        return correct / max(count, 1)

    def report(self, world: World, epoch: int, prefix: str) -> tuple[float, float]:
        """Print the epoch's accuracy over all hosts; returns it and the example count."""
        correct, top, count = distributed.all_sum(world, self.sums.tolist())
        print(f"Epoch[{epoch}] {prefix}-accuracy={correct / max(count, 1):.6f}")
        if self.top_k:
            print(f"Epoch[{epoch}] {prefix}-top_k_accuracy_{self.top_k}={top / max(count, 1):.6f}")
        return correct / max(count, 1), count


def lockstep(batches: Iterable[Any], world: World, known: int | None) -> Iterator[Any]:
    """The batches every host runs: as many as the host with fewest has, since DDP waits for
    every host at each step. `known`: this host's batch count when known ahead (files)."""
    if world.size == 1:
        yield from batches
    elif known is not None:
        yield from itertools.islice(batches, distributed.all_min(world, known))
    else:  # a stream: ask at each step
        iterator = iter(batches)
        while distributed.all_true(world, (batch := next(iterator, None)) is not None):
            yield batch


def autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager[Any]:
    return torch.autocast(device.type, dtype=torch.float16) if amp else contextlib.nullcontext()


def train_epoch(epoch: int, net: torch.nn.Module, batches: Iterable[Any], optimizer: torch.optim.Optimizer,
                scaler: torch.amp.GradScaler, tally: Tally, world: World, amp: bool) -> int:
    """One pass over this host's share of the training data; returns the steps taken."""
    net.train()
    steps, seen, last, last_seen = 0, 0, time.monotonic(), 0
    for images, labels in batches:
        images, labels = images.to(world.device, non_blocking=True), labels.to(world.device, non_blocking=True)
        with autocast(world.device, amp):
            logits = net(images)
            loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        tally.add(logits.detach(), labels)
        steps, seen = steps + 1, seen + len(labels)
        if world.rank == 0 and steps % REPORT_EVERY == 0:
            now = time.monotonic()
            print(f"Epoch[{epoch}] Batch [{steps}]\tSpeed: {(seen - last_seen) / (now - last):.2f} samples/sec\t"
                  f"accuracy={tally.accuracy():.6f}")
            last, last_seen = now, seen
    return steps


@torch.no_grad()
def evaluate(net: torch.nn.Module, batches: Iterable[Any], tally: Tally, device: torch.device, amp: bool) -> None:
    net.eval()
    for images, labels in batches:
        with autocast(device, amp):
            tally.add(net(images.to(device, non_blocking=True)), labels.to(device, non_blocking=True))


def make_optimizer(cfg: Config, net: torch.nn.Module) -> torch.optim.Optimizer:
    params, lr, wd = net.parameters(), cfg.learning_rate, cfg.weight_decay
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(cfg.beta_1, cfg.beta_2), eps=cfg.eps, weight_decay=wd)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=cfg.gamma, eps=cfg.eps, weight_decay=wd)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=wd, nesterov=cfg.optimizer == "nag")


def train(job: Job) -> None:
    """Train the job's model; raises TrainingError for what the user can fix."""
    cfg = job.config
    noted_small = multiprocessing.Value("b", 0)
    train_data = data.open_source(job.channels, "train", cfg, True, noted_small)
    if train_data is None:
        raise TrainingError("the job has no 'train' channel: add one with the training images or .rec files")
    val_data = data.open_source(job.channels, "validation", cfg, False, noted_small)
    if cfg.early_stopping and val_data is None:
        raise TrainingError("early_stopping=true needs a 'validation' channel: add one, or set early_stopping false")
    net = model.build(cfg)
    if "model" in job.channels:
        model.load_incremental(net, cfg, job.channels["model"].folder)
    elif cfg.use_pretrained_model:
        model.load_pretrained(net, cfg, f"{DATA_DIR}/pretrained")

    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    torch.set_num_threads(cpu_count())
    amp = cfg.float16 and device.type == "cuda"
    if cfg.float16 and not amp:
        print("note: precision_dtype=float16 needs a GPU; this CPU host trains in float32")
    named = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"training on {device}{named} in {'float16, mixed precision' if amp else 'float32'}")
    world = distributed.setup(job, device)
    try:
        _run(job, cfg, net.to(device), train_data, val_data, world, amp)
    finally:
        distributed.close(world)


def _run(job: Job, cfg: Config, net: torch.nn.Module, train_data: data.Source, val_data: data.Source | None,
         world: World, amp: bool) -> None:
    device = world.device
    optimizer = make_optimizer(cfg, net)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(cfg.lr_scheduler_step), cfg.lr_scheduler_factor)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    stopper, start = EarlyStopping(), 0
    state = checkpoint.resume(job.checkpoint_dir, world, cfg)
    if state is not None:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        stopper, start = EarlyStopping(**state["early_stopping"]), state["epoch"] + 1
    trained = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None) \
        if world.size > 1 else net

    count = len(train_data.dataset) if train_data.dataset is not None else None  # type: ignore[arg-type]
    print(f"{world.host}: rank {world.rank} of {world.size}, "
          f"{count if count is not None else 'streamed (Pipe)'} training images, device {device}", flush=True)
    if count is not None and world.rank == 0 and not train_data.channel.sharded and count != cfg.num_training_samples:
        print(f"note: num_training_samples is {cfg.num_training_samples}, the train channel has {count} images; "
              "all of them are used")
    pin = device.type == "cuda"
    done = start
    for epoch in range(start, cfg.epochs):
        tic = time.monotonic()
        loader = train_data.loader(cfg, world.rank, world.size, True, epoch, pin)
        known = len(loader) if train_data.dataset is not None else None
        tally = Tally(device, cfg.top_k)
        steps = train_epoch(epoch, trained, lockstep(loader, world, known), optimizer, scaler, tally, world, amp)
        if steps == 0:
            raise TrainingError(f"epoch {epoch}: a host has less than one full batch of training images "
                                f"(mini_batch_size={cfg.mini_batch_size}); lower mini_batch_size or add images")
        seconds = time.monotonic() - tic
        _, images = tally.report(world, epoch, "Train")
        print(f"Epoch[{epoch}] Time cost={seconds:.3f}")
        print(f"Epoch[{epoch}] Train-throughput={images / seconds:.1f} images/s", flush=True)
        accuracy = None
        if val_data is not None:
            tally = Tally(device, cfg.top_k)
            evaluate(net, val_data.loader(cfg, world.rank, world.size, False, epoch, pin), tally, device, amp)
            accuracy, _ = tally.report(world, epoch, "Validation")
        scheduler.step()
        stop = stopper.update(cfg, epoch, accuracy)
        done = epoch + 1
        if done % cfg.checkpoint_frequency == 0:
            checkpoint.save(job.checkpoint_dir, epoch, {
                "epoch": epoch, "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "early_stopping": {"best": stopper.best, "stale": stopper.stale}, "model_spec": cfg.model_spec()})
        if stop:
            print(f"early stopping after epoch {epoch}: validation accuracy has not improved on {stopper.best:.6f} "
                  f"by early_stopping_tolerance for {stopper.stale} epoch(s)", flush=True)
            break
    if world.rank == 0:
        model.export(net, cfg, done)


def main() -> None:
    stop_on_sigterm()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    try:
        train(load_job())
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        write_failure(str(exc))
        sys.exit(2)
    except Exception as exc:
        write_failure(f"{type(exc).__name__}: {exc}")
        raise


if __name__ == "__main__":
    main()
