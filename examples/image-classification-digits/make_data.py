"""Write the image-classification example's data under DOCKYARD_HOME.

scikit-learn's bundled digits (1,797 8x8 images of 0-9), scaled to 32x32 and
written as JPEGs, split 80/20, in the layout SageMaker's image classifier reads:

    DIR/train/<label>/<n>.jpg        DIR/train_lst/train.lst
    DIR/validation/<label>/<n>.jpg   DIR/validation_lst/validation.lst

A .lst line is `index<TAB>label<TAB>path`, the path relative to the image channel.
With --recordio, DIR/train-rec/train.rec and DIR/validation-rec/validation.rec
hold the same images in im2rec's RecordIO format instead.

    python examples/image-classification-digits/make_data.py [--out DIR] [--recordio]

Default DIR: $DOCKYARD_HOME/data/digits (DOCKYARD_HOME: ~/.dockyard).
"""

from __future__ import annotations

import argparse
import io
import os
import struct

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SIZE = 32
RECORDIO_MAGIC = 0xCED7230A


def jpeg(pixels: np.ndarray) -> bytes:
    """An 8x8 digit (values 0-16) as a SIZE x SIZE RGB JPEG."""
    gray = Image.fromarray((pixels * (255 / 16)).astype(np.uint8), mode="L").resize((SIZE, SIZE), Image.BILINEAR)
    out = io.BytesIO()
    gray.convert("RGB").save(out, format="JPEG", quality=95)
    return out.getvalue()


def record(index: int, label: int, image: bytes) -> bytes:
    """One im2rec record: MXNet RecordIO framing around IRHeader(flag, label, id, id2) and the image."""
    payload = struct.pack("<IfQQ", 0, float(label), index, 0) + image
    return struct.pack("<II", RECORDIO_MAGIC, len(payload)) + payload + b"\0" * (-len(payload) % 4)


def main() -> None:
    home = os.environ.get("DOCKYARD_HOME") or os.path.expanduser("~/.dockyard")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(home, "data", "digits"))
    parser.add_argument("--recordio", action="store_true", help="write im2rec .rec files instead of JPEGs + .lst")
    args = parser.parse_args()
    digits = load_digits()
    x_train, x_val, y_train, y_val = train_test_split(
        digits.images, digits.target, test_size=0.2, random_state=42, stratify=digits.target
    )
    for channel, images, labels in (("train", x_train, y_train), ("validation", x_val, y_val)):
        if args.recordio:
            folder = os.path.join(args.out, f"{channel}-rec")
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, f"{channel}.rec"), "wb") as rec:
                for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
                    rec.write(record(i, int(label), jpeg(pixels)))
            print(f"wrote {len(labels)} records to {folder}/{channel}.rec")
            continue
        lines = []
        for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
            relative = f"{label}/{i}.jpg"
            path = os.path.join(args.out, channel, relative)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(jpeg(pixels))
            lines.append(f"{i}\t{label}\t{relative}\n")
        os.makedirs(os.path.join(args.out, f"{channel}_lst"), exist_ok=True)
        with open(os.path.join(args.out, f"{channel}_lst", f"{channel}.lst"), "w") as f:
            f.writelines(lines)
        print(f"wrote {len(lines)} images to {args.out}/{channel} and {channel}_lst/{channel}.lst")


if __name__ == "__main__":
    main()
