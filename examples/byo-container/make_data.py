"""Write y = 3*x1 - 2*x2 + 1 (plus a little noise) as CSV under DOCKYARD_HOME."""

import os
import random

home = os.environ.get("DOCKYARD_HOME") or os.path.expanduser("~/.dockyard")
folder = os.path.join(home, "data", "byo-linear", "train")
os.makedirs(folder, exist_ok=True)
rng = random.Random(7)
with open(os.path.join(folder, "data.csv"), "w") as f:
    for _ in range(200):
        x1, x2 = rng.uniform(-1, 1), rng.uniform(-1, 1)
        f.write(f"{3 * x1 - 2 * x2 + 1 + rng.gauss(0, 0.01):.6f},{x1:.6f},{x2:.6f}\n")
print(f"wrote 200 rows to {folder}/data.csv")
