"""Write the breast-cancer example's data under DOCKYARD_HOME.

Makes CSV files (label first, no header) from scikit-learn's bundled
breast-cancer set, split 80/20 into train and validation:

    python examples/xgboost-breast-cancer/make_data.py [--out DIR]

Default DIR: $DOCKYARD_HOME/data/breast-cancer (DOCKYARD_HOME: ~/.dockyard).
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split


def main() -> None:
    home = os.environ.get("DOCKYARD_HOME") or os.path.expanduser("~/.dockyard")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(home, "data", "breast-cancer"))
    args = parser.parse_args()
    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.2, random_state=42, stratify=y)
    for channel, features, labels in (("train", x_train, y_train), ("validation", x_val, y_val)):
        folder = os.path.join(args.out, channel)
        os.makedirs(folder, exist_ok=True)
        rows = np.column_stack([labels, features])
        np.savetxt(os.path.join(folder, f"{channel}.csv"), rows, delimiter=",", fmt="%.6g")
        print(f"wrote {len(rows)} rows to {folder}/{channel}.csv")


if __name__ == "__main__":
    main()
