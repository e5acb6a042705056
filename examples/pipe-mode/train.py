#!/usr/bin/env python3
"""Linear regression by stochastic gradient descent, fed by a Pipe channel.

Epoch N reads the FIFO /opt/ml/input/data/train_N to its end: CSV rows
(target first), in a new order each epoch (the channel's shuffle_config), one
SGD step per row. No row is ever stored on disk. Prints `epoch=N mse=X` for
dockyard to scrape and writes the weights to /opt/ml/model/model.json.
"""

import csv
import io
import json
import os
import time

hps = json.load(open("/opt/ml/input/config/hyperparameters.json"))
mode = json.load(open("/opt/ml/input/config/inputdataconfig.json"))["train"]["TrainingInputMode"]
assert mode == "Pipe", f"this example reads a Pipe channel; the train channel is {mode}"
epochs, rate = int(hps.get("epochs", "20")), float(hps.get("learning_rate", "0.05"))
weights = None


def fifo(epoch):
    path = f"/opt/ml/input/data/train_{epoch}"
    while not os.path.exists(path):  # the next epoch's FIFO appears once the last one was read
        time.sleep(0.01)
    return path


for epoch in range(epochs):
    squared, rows = 0.0, 0
    with open(fifo(epoch), "rb") as stream:
        for row in csv.reader(io.TextIOWrapper(stream)):
            if not row:
                continue
            y, x = float(row[0]), [float(v) for v in row[1:]] + [1.0]
            weights = weights or [0.0] * len(x)
            error = sum(w * v for w, v in zip(weights, x)) - y
            weights = [w - rate * 2 * error * v for w, v in zip(weights, x)]
            squared, rows = squared + error * error, rows + 1
    print(f"epoch={epoch} rows={rows} mse={squared / max(rows, 1):.6f}", flush=True)
with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w") as f:
    json.dump({"weights": weights}, f)
