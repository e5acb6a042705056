"""Write y = 3*x1 - 2*x2 + 1 (plus a little noise) as 8 gzipped CSV parts under DOCKYARD_HOME."""

import gzip
import os
import random

home = os.environ.get("DOCKYARD_HOME") or os.path.expanduser("~/.dockyard")
folder = os.path.join(home, "data", "pipe-linear", "train")
os.makedirs(folder, exist_ok=True)
rng = random.Random(7)
for part in range(8):
    lines = []
    for _ in range(100):
        x1, x2 = rng.uniform(-1, 1), rng.uniform(-1, 1)
        lines.append(f"{3 * x1 - 2 * x2 + 1 + rng.gauss(0, 0.01):.6f},{x1:.6f},{x2:.6f}\n")
    with gzip.open(os.path.join(folder, f"part-{part}.csv.gz"), "wt") as f:
        f.writelines(lines)
print(f"wrote 8 gzipped parts of 100 rows to {folder}")
