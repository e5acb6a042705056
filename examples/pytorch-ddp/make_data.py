"""Write the PyTorch DDP example's data under DOCKYARD_HOME.

scikit-learn's digits (8x8 images as 64 features, scaled to 0-1) in one
NumPy file the script reads:

    python examples/pytorch-ddp/make_data.py [--out DIR]

Default DIR: $DOCKYARD_HOME/data/digits-npz (DOCKYARD_HOME: ~/.dockyard).
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from sklearn.datasets import load_digits


def main() -> None:
    home = os.environ.get("DOCKYARD_HOME") or os.path.expanduser("~/.dockyard")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(home, "data", "digits-npz"))
    args = parser.parse_args()
    x, y = load_digits(return_X_y=True)
    folder = os.path.join(args.out, "train")
    os.makedirs(folder, exist_ok=True)
    np.savez(os.path.join(folder, "digits.npz"), x=(x / 16.0).astype(np.float32), y=y.astype(np.int64))
    print(f"wrote {len(y)} digits to {folder}/digits.npz")


if __name__ == "__main__":
    main()
