"""A user script as SageMaker's toolkit runs it: hyperparameters arrive as
command-line arguments, paths as SM_* variables."""

import argparse
import json
import os

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=1)
parser.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR"))
parser.add_argument("--train", default=os.environ.get("SM_CHANNEL_TRAIN"))
args, _ = parser.parse_known_args()

files = sorted(os.listdir(args.train))
for epoch in range(args.epochs):
    print(f"epoch={epoch} loss={1.0 / (epoch + 1):.4f}", flush=True)
with open(os.path.join(args.model_dir, "toolkit-result.json"), "w") as f:
    json.dump(
        {
            "epochs": args.epochs,
            "files": files,
            "hosts": json.loads(os.environ["SM_HOSTS"]),
            "current_host": os.environ["SM_CURRENT_HOST"],
        },
        f,
    )
