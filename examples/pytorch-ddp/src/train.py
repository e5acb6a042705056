"""A PyTorch DDP training script in SageMaker's script mode.

SageMaker's training toolkit runs this on every instance with the job's
hyperparameters as arguments and the SM_* environment: SM_HOSTS and
SM_CURRENT_HOST say who is who, SM_CHANNEL_TRAIN where the data is,
SM_MODEL_DIR where the model goes. The same script runs on SageMaker unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler


def load(folder: str) -> TensorDataset:
    data = np.load(os.path.join(folder, "digits.npz"))
    return TensorDataset(torch.tensor(data["x"], dtype=torch.float32), torch.tensor(data["y"], dtype=torch.long))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.01)
    args = parser.parse_args()

    hosts = json.loads(os.environ["SM_HOSTS"])
    rank, world = hosts.index(os.environ["SM_CURRENT_HOST"]), len(hosts)
    os.environ.setdefault("MASTER_ADDR", hosts[0])
    os.environ.setdefault("MASTER_PORT", "29500")
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", rank=rank, world_size=world)
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    print(f"{os.environ['SM_CURRENT_HOST']}: rank {rank} of {world} on {device}", flush=True)

    train = load(os.environ["SM_CHANNEL_TRAIN"])
    sampler = DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True, seed=0)
    loader = DataLoader(train, batch_size=args.batch_size, sampler=sampler)
    model = DistributedDataParallel(
        nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)).to(device),
        device_ids=[device.index] if device.type == "cuda" else None,
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        start, seen, correct, total_loss = time.time(), 0, 0, 0.0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            out = model(x)
            loss = loss_fn(out, y)
            loss.backward()
            optimizer.step()
            seen += len(y)
            correct += int((out.argmax(1) == y).sum())
            total_loss += loss.item() * len(y)
        totals = torch.tensor([seen, correct, total_loss], dtype=torch.float64)
        dist.all_reduce(totals)  # the whole epoch's figures, over every host
        if rank == 0:
            print(
                f"epoch={epoch} loss={totals[2] / totals[0]:.4f} accuracy={totals[1] / totals[0]:.4f} "
                f"samples={int(totals[0])} seconds={time.time() - start:.2f}",
                flush=True,
            )
    if rank == 0:
        torch.save(model.module.state_dict(), os.path.join(os.environ["SM_MODEL_DIR"], "model.pt"))
    # Every rank leaves together: one that tears gloo down while a peer is still at work (rank 0
    # saving the model) can abort ("terminate called without an active exception").
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
