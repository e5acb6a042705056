#!/usr/bin/env python3
"""A user's own training script: linear regression by gradient descent.

Reads CSV rows (target first) from the train channel, takes `epochs` and
`learning_rate` from hyperparameters.json, prints `epoch=N loss=X` lines for
dockyard to scrape, and writes the weights to /opt/ml/model/model.json.
"""

import csv
import json
import os

hps = json.load(open("/opt/ml/input/config/hyperparameters.json"))
epochs = int(hps.get("epochs", "100"))
rate = float(hps.get("learning_rate", "0.05"))
rows = []
train_dir = os.environ["SM_CHANNEL_TRAIN"]
for name in sorted(os.listdir(train_dir)):
    with open(os.path.join(train_dir, name)) as f:
        rows += [[float(v) for v in row] for row in csv.reader(f) if row]
ys = [r[0] for r in rows]
xs = [r[1:] + [1.0] for r in rows]
weights = [0.0] * len(xs[0])
for epoch in range(epochs):
    grads = [0.0] * len(weights)
    loss = 0.0
    for x, y in zip(xs, ys):
        error = sum(w * v for w, v in zip(weights, x)) - y
        loss += error * error / len(xs)
        for i, v in enumerate(x):
            grads[i] += 2 * error * v / len(xs)
    weights = [w - rate * g for w, g in zip(weights, grads)]
    print(f"epoch={epoch} loss={loss:.6f}", flush=True)
with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w") as f:
    json.dump({"weights": weights}, f)
