"""The network: torchvision's ResNet of `num_layers`, where its first weights come
from (ImageNet weights for use_pretrained_model=1, an earlier job's model for
incremental training), and the model artifact in /opt/ml/model.

The artifact is image-classification.pt, the network as TorchScript (input
N x C x H x W floats normalized with model-info.json's mean and std, output
logits), and model-info.json. Nothing is ever downloaded.
"""

from __future__ import annotations

import glob
import io
import json
import os
import tarfile

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from image_classification.config import MODEL_DIR, Config, TrainingError
from image_classification.data import MEAN, STD

ALGORITHM = "image-classification"
NETWORK_FILE = "image-classification.pt"
INFO_FILE = "model-info.json"
DEPTHS: dict[int, tuple[type[nn.Module], list[int]]] = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
    200: (Bottleneck, [3, 24, 36, 3]),
}


def build(cfg: Config) -> ResNet:
    """A freshly initialized ResNet for the job's depth, classes and image channels."""
    block, layers = DEPTHS[cfg.num_layers]
    net = ResNet(block, layers, num_classes=cfg.num_classes)  # type: ignore[arg-type]
    if cfg.image_shape[0] == 1:
        net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return net


def load_pretrained(net: ResNet, cfg: Config, folder: str) -> None:
    """ImageNet weights for every layer but the last: from the `pretrained` channel's .pth/.pt
    file, else from torchvision's cache in the image ($TORCH_HOME/hub/checkpoints).

    Raises:
        TrainingError: no weights file, or one that is not a ResNet of this depth.
    """
    depth = cfg.num_layers
    found = sorted(glob.glob(f"{folder}/**/*.pt", recursive=True) + glob.glob(f"{folder}/**/*.pth", recursive=True))
    if len(found) > 1:
        found = [p for p in found if f"resnet{depth}" in os.path.basename(p)] or found
    if not found:
        found = sorted(glob.glob(os.path.join(torch.hub.get_dir(), "checkpoints", f"resnet{depth}-*.pth")))
    if len(found) != 1:
        what = "no weights file" if not found else f"{len(found)} candidates ({', '.join(found)})"
        raise TrainingError(f"use_pretrained_model=1 needs torchvision's ImageNet weights for ResNet-{depth}, found "
                            f"{what}: add a channel named 'pretrained' holding the one file (e.g. torchvision's "
                            f"resnet{depth}-*.pth state dict); nothing is downloaded")
    path = found[0]
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state.get("model", state))
        state = {k.removeprefix("module."): v for k, v in state.items()}
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same problem to the user
        raise TrainingError(f"pretrained weights {path} are not a PyTorch state dict ({exc}); "
                            f"give torchvision's resnet{depth} .pth file") from None
    if cfg.image_shape[0] == 1 and "conv1.weight" in state:
        state["conv1.weight"] = state["conv1.weight"].sum(dim=1, keepdim=True)  # RGB filters onto one channel
    own = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    wrong = [k for k, v in own.items() if not k.endswith("num_batches_tracked")  # absent from older files
             and (k not in state or state[k].shape != v.shape)] + [k for k in state if k not in own]
    if wrong:
        raise TrainingError(f"pretrained weights {path} are not a ResNet-{depth} ('{wrong[0]}' and {len(wrong) - 1} "
                            f"more tensors differ); give torchvision's resnet{depth} weights or change num_layers")
    net.load_state_dict(state, strict=False)
    print(f"starting from pretrained weights {path}; final layer new, for {cfg.num_classes} classes", flush=True)


def _artifact_files(folder: str) -> dict[str, bytes]:
    """The model channel's model-info.json and network: from a model.tar.gz or extracted."""
    files = [p for p in glob.glob(f"{folder}/**/*", recursive=True) if os.path.isfile(p)]
    wanted = (INFO_FILE, NETWORK_FILE)
    loose = {os.path.basename(p): p for p in files if os.path.basename(p) in wanted}
    if len(loose) == len(wanted):
        return {name: open(path, "rb").read() for name, path in loose.items()}
    found: dict[str, bytes] = {}
    for path in files:
        try:
            with tarfile.open(path) as tar:
                for member in tar.getmembers():
                    name = os.path.basename(member.name)
                    if name in wanted and member.isfile():
                        found[name] = tar.extractfile(member).read()  # type: ignore[union-attr]
        except (tarfile.TarError, OSError, EOFError):
            continue
        if len(found) == len(wanted):
            return found
    listing = ", ".join(os.path.relpath(p, folder) for p in files[:5]) or "nothing"
    hint = " (an MXNet model of SageMaker's own algorithm cannot be loaded)" if any(
        p.endswith((".params", "-symbol.json")) for p in files) else ""
    raise TrainingError(f"the model channel's files ({listing}) are not a model of dockyard's image classifier: "
                        f"expected a model.tar.gz holding {NETWORK_FILE} and {INFO_FILE}{hint}; give it the "
                        "model.tar.gz of an earlier image-classification job, or drop the channel")


def load_incremental(net: ResNet, cfg: Config, folder: str) -> None:
    """Continue from an earlier job's model (the `model` channel).

    Raises:
        TrainingError: not this algorithm's model, or one of another shape than the job's.
    """
    files = _artifact_files(folder)
    try:
        info = json.loads(files[INFO_FILE])
    except ValueError as exc:
        raise TrainingError(f"the model channel's {INFO_FILE} is not JSON ({exc}); give an unmodified "
                            "model.tar.gz of an earlier image-classification job") from None
    if info.get("algorithm") != ALGORITHM:
        raise TrainingError(f"the model channel's model is from algorithm {info.get('algorithm')!r}, not "
                            f"{ALGORITHM}: give the model.tar.gz of an earlier image-classification job")
    for name, wanted in cfg.model_spec().items():
        if info.get(name) != wanted:
            raise TrainingError(f"the model channel's model has {name}={info.get(name)}, the job asks for {wanted}: "
                                f"incremental training keeps the network, so set {name} to {info.get(name)} "
                                "or drop the model channel")
    try:
        net.load_state_dict(torch.jit.load(io.BytesIO(files[NETWORK_FILE]), map_location="cpu").state_dict())
    except Exception as exc:  # noqa: BLE001 - an unloadable network is one problem to the user
        raise TrainingError(f"the model channel's {NETWORK_FILE} cannot be loaded ({exc}); give an unmodified "
                            "model.tar.gz of an earlier image-classification job") from None
    print(f"incremental training: starting from the model channel's model ({info.get('epochs')} epochs)", flush=True)


def export(net: nn.Module, cfg: Config, epochs: int) -> None:
    """Write the TorchScript network and model-info.json to /opt/ml/model, each file whole."""
    net = net.cpu().eval()
    try:
        module = torch.jit.script(net)
    except Exception:  # noqa: BLE001 - an architecture TorchScript cannot compile is traced instead
        module = torch.jit.trace(net, torch.zeros(1, *cfg.image_shape))
    os.makedirs(MODEL_DIR, exist_ok=True)
    channels = cfg.image_shape[0]
    info = {"algorithm": ALGORITHM, **cfg.model_spec(), "epochs": epochs,
            "normalization": {"mean": MEAN[channels], "std": STD[channels]}, "torch": torch.__version__}
    torch.jit.save(module, f"{MODEL_DIR}/.{NETWORK_FILE}")
    os.replace(f"{MODEL_DIR}/.{NETWORK_FILE}", f"{MODEL_DIR}/{NETWORK_FILE}")
    with open(f"{MODEL_DIR}/{INFO_FILE}", "w") as f:
        json.dump(info, f, indent=2)
    print(f"saved the model to {MODEL_DIR}/{NETWORK_FILE} and {INFO_FILE}", flush=True)
