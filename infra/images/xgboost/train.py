#!/usr/bin/env python3
"""dockyard's built-in XGBoost: `train` under SageMaker's container contract.

Reads each channel (train, and validation when given) in its content type from
inputdataconfig.json (a channel that gives none, in the train channel's), as
SageMaker's XGBoost does:

- text/libsvm, the default when none is given: `label[:weight] index:value ...`,
  indices from 0;
- text/csv: the label in the first column, no header; with `csv_weights=1` the
  second column is each row's weight (`label_size`, when given, must be 1);
- application/x-parquet: the label in the first column;
- application/x-recordio-protobuf: SageMaker's records (record.proto), the
  features under features["values"] (dense or sparse), the label under
  label["values"].

File and FastFile channels are read file by file (names starting with . or _
left out); Pipe channels (CSV and
RecordIO-protobuf) from their first epoch's FIFO. On several instances the
hosts train one model together over XGBoost's collective communication, the
tracker on algo-1: a ShardedByS3Key channel is each host's own share, a
FullyReplicated one is split by rows (host k of N takes rows k, k+N, ...), so
the hosts together see every row once.

Prints SageMaker-style evaluation lines ("[3]#011train-auc:0.99#011validation-auc:0.98"
with real tabs), adds `_tuning_objective_metric` (set by a tuning job) to the
evaluation metrics, last, so early stopping watches it; writes checkpoints
`xgboost-checkpoint.<round>` (SageMaker's name: the 0-based round it ends with)
every `checkpoint_frequency` rounds to checkpointconfig.json's LocalPath and resumes from the newest one; saves the
model to /opt/ml/model/xgboost-model. A failure is written to
/opt/ml/output/failure before exiting non-zero.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import signal
import socket
import struct
import sys
import time
import traceback
import warnings
from typing import Any, NamedTuple

ML = "/opt/ml"
CONFIG = f"{ML}/input/config"
DATA = f"{ML}/input/data"
# Where checkpoints go: checkpointconfig.json's LocalPath when the job has a
# checkpoint_config, else the contract's default folder.
CHECKPOINTS = f"{ML}/checkpoints"
KEEP_CHECKPOINTS = 5
TRACKER_PORT = 9099  # XGBoost's tracker, on algo-1, when the job has several instances
# Hyperparameters that steer this script rather than xgboost itself.
OWN = {"num_round", "early_stopping_rounds", "checkpoint_frequency", "csv_weights", "_tuning_objective_metric"}
FORMATS = {
    "text/libsvm": "libsvm", "libsvm": "libsvm", "text/x-libsvm": "libsvm",
    "text/csv": "csv", "csv": "csv",
    "application/x-parquet": "parquet", "parquet": "parquet",
    "application/x-recordio-protobuf": "recordio-protobuf", "recordio-protobuf": "recordio-protobuf",
}  # fmt: skip
PIPE_FORMATS = ("csv", "recordio-protobuf")
RECORDIO_MAGIC = 0xCED7230A


class Stop(Exception):
    pass


class Rows(NamedTuple):
    """A channel's rows: features (dense or sparse), labels, weights and query ids when given."""

    features: Any
    labels: Any
    weights: Any = None
    queries: Any = None


SIGTERM_SEEN = []


def on_sigterm(signum, frame):  # noqa: ARG001
    # Finish the round in progress, checkpoint it, then stop (see Checkpoint).
    SIGTERM_SEEN.append(True)


def read_json(path, default):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default


# -- reading a channel -------------------------------------------------------


def content_type(name, given):
    """(format, parameters) of a channel's content type: `text/csv;label_size=1` -> ("csv", {"label_size": "1"})."""
    given = given or "text/libsvm"
    media, *rest = [part.strip() for part in given.split(";")]
    fmt = FORMATS.get(media.lower())
    if fmt is None:
        raise ValueError(
            f"channel {name}: XGBoost does not read content type '{given}'; give text/libsvm (the default), "
            "text/csv, application/x-parquet or application/x-recordio-protobuf"
        )
    return fmt, {k.strip(): v.strip().strip('"') for k, _, v in (p.partition("=") for p in rest) if v}


def sources(name, config, fmt):
    """The channel's data: its files (File, FastFile; empty ones, and names starting with . or _ as
    Spark's _SUCCESS and Parquet's _metadata, left out), or its first epoch's FIFO (Pipe)."""
    if config.get("TrainingInputMode") == "Pipe":
        if fmt not in PIPE_FORMATS:
            raise ValueError(f"channel {name}: Pipe mode reads text/csv and application/x-recordio-protobuf, "
                             f"not {fmt}; set the channel's input_mode to File")  # fmt: skip
        return [f"{DATA}/{name}_0"]
    found = glob.glob(f"{DATA}/{name}/**/*", recursive=True)
    return sorted(
        p for p in found
        if os.path.isfile(p) and os.path.getsize(p) > 0 and not os.path.basename(p).startswith((".", "_"))
    )  # fmt: skip


def read_csv(path, weighted):
    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # an empty Pipe epoch: no rows
        data = np.loadtxt(path, delimiter=",", ndmin=2)
    if not data.size:
        return None
    first = 2 if weighted else 1
    if data.shape[1] <= first:
        raise ValueError(f"rows of {data.shape[1]} column(s) have no features after the label"
                         + (" and the weight (csv_weights=1)" if weighted else ""))  # fmt: skip
    return Rows(data[:, first:], data[:, 0], data[:, 1] if weighted else None)


def read_libsvm(path, weighted):  # noqa: ARG001 - libsvm gives weights as label:weight
    """`label[:weight] [qid:Q] index:value ...` lines, indices from 0, `#` starting a comment. Parsed
    here rather than by XGBoost's text reader, which rounds some values differently from CSV's."""
    import numpy as np
    import scipy.sparse

    labels, weights, queries, rows, cols, values = [], [], [], [], [], []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            try:
                label, _, weight = fields[0].partition(":")
                labels.append(float(label))
                weights.append(float(weight) if weight else 1.0)
                for field in fields[1:]:
                    key, _, value = field.partition(":")
                    if key == "qid":
                        queries.append(int(value))
                        continue
                    rows.append(len(labels) - 1)
                    cols.append(int(key))
                    values.append(float(value))
            except ValueError:
                looks = "; it looks like CSV: set the channel's content_type to text/csv" if "," in line else ""
                raise ValueError(f"line {number} is not `label[:weight] index:value ...`{looks}") from None
    if not labels:
        return None
    if queries and len(queries) != len(labels):
        raise ValueError("some rows have qid:, some not; give every row its query id")
    matrix = scipy.sparse.csr_matrix((values, (rows, cols)), shape=(len(labels), max(cols, default=-1) + 1))
    weighted = any(w != 1.0 for w in weights)
    return Rows(matrix, np.asarray(labels), np.asarray(weights) if weighted else None,
                np.asarray(queries) if queries else None)  # fmt: skip


def read_parquet(path, weighted):  # noqa: ARG001 - weights are CSV's
    import numpy as np
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if not table.num_rows:
        return None
    data = np.column_stack([c.to_numpy() for c in table.columns]).astype(np.float64)
    if data.shape[1] < 2:
        raise ValueError("rows need the label in the first column and features after it")
    return Rows(data[:, 1:], data[:, 0])


def recordio_payloads(stream):
    """The records of a RecordIO stream (MXNet's framing, which SageMaker writes): a magic word, a
    word of 3 flag bits and 29 length bits, the data padded to 4 bytes; a record split in parts
    had the magic word where the parts join."""
    part = b""
    while header := stream.read(8):
        magic, word = struct.unpack("<II", header) if len(header) == 8 else (None, 0)
        if magic != RECORDIO_MAGIC:
            raise ValueError("not RecordIO: a record does not start with RecordIO's magic number")
        flag, length = word >> 29, word & ((1 << 29) - 1)
        data = stream.read(length)
        if len(data) < length:
            raise ValueError("the RecordIO stream ends inside a record")
        stream.read(-length % 4)
        if flag == 0:
            yield data
        elif flag == 1:
            part = data
        else:
            part += struct.pack("<I", RECORDIO_MAGIC) + data
            if flag == 3:
                yield part


def tensor_of(values, what):
    """The numeric tensor a record's Value holds."""
    for field in ("float32_tensor", "float64_tensor", "int32_tensor"):
        if values.HasField(field):
            return getattr(values, field)
    raise ValueError(f"{what} holds no float32, float64 or int32 tensor")


def read_recordio(path, weighted):  # noqa: ARG001 - weights are CSV's
    import numpy as np
    import scipy.sparse
    from record_pb2 import Record

    rows, cols, values, labels, width = [], [], [], [], 0
    with open(path, "rb") as stream:
        for payload in recordio_payloads(stream):
            record = Record()
            record.ParseFromString(payload)
            at = f"record {len(labels)}"
            if "values" not in record.features or "values" not in record.label:
                raise ValueError(f"{at} has no features['values'] or no label['values']")
            features = tensor_of(record.features["values"], f"{at}'s features")
            keys = list(features.keys) or range(len(features.values))
            rows.extend([len(labels)] * len(features.values))
            cols.extend(keys)
            values.extend(features.values)
            width = max(width, features.shape[0] if features.shape else max(keys, default=-1) + 1)
            labels.append(tensor_of(record.label["values"], f"{at}'s label").values[0])
    if not labels:
        return None
    matrix = scipy.sparse.csr_matrix((values, (rows, cols)), shape=(len(labels), width), dtype=np.float32)
    return Rows(matrix, np.asarray(labels, dtype=np.float32))


READERS = {"csv": read_csv, "libsvm": read_libsvm, "parquet": read_parquet, "recordio-protobuf": read_recordio}
WHAT = {"csv": "text/csv: numbers only, the label first, no header row",
        "libsvm": "text/libsvm, the channel's content type or, when it gives none, XGBoost's default",
        "parquet": "application/x-parquet: numeric columns, the label first",
        "recordio-protobuf": "application/x-recordio-protobuf: SageMaker's RecordIO-protobuf records"}  # fmt: skip


def combined(parts):
    """One channel's rows from its files' (sparse when any file's are, as wide as the widest)."""
    import numpy as np
    import scipy.sparse

    if len(parts) == 1:
        return parts[0]
    width = max(p.features.shape[1] for p in parts)
    if any(scipy.sparse.issparse(p.features) for p in parts):
        widened = [scipy.sparse.csr_matrix(p.features) for p in parts]
        for m in widened:
            m.resize((m.shape[0], width))
        features = scipy.sparse.vstack(widened).tocsr()
    else:
        if len({p.features.shape[1] for p in parts}) > 1:
            raise ValueError(f"its files have rows of different widths: {sorted({p.features.shape[1] for p in parts})}")
        features = np.vstack([p.features for p in parts])

    def joined(field, fill):
        if all(getattr(p, field) is None for p in parts):
            return None
        return np.concatenate([fill(p) if getattr(p, field) is None else getattr(p, field) for p in parts])

    weights = joined("weights", lambda p: np.ones(len(p.labels)))
    if any(p.queries is None for p in parts) and not all(p.queries is None for p in parts):
        raise ValueError("some files have qid:, some not; give every row its query id")
    return Rows(features, np.concatenate([p.labels for p in parts]), weights, joined("queries", None))


def load_channel(name, hps, hosts, rank):
    """This host's rows of a channel, or None when it has none. Every channel is read in the train
    channel's content type when it gives none of its own (as SageMaker's XGBoost reads them)."""
    configs = read_json(f"{CONFIG}/inputdataconfig.json", {})
    config = configs.get(name)
    if config is None:
        return None
    fmt, params = content_type(name, config.get("ContentType") or configs.get("train", {}).get("ContentType"))
    if fmt == "csv" and params.get("label_size", "1") != "1":
        raise ValueError(f"channel {name}: text/csv;label_size={params['label_size']} — training reads one label, "
                         "from the first column: set label_size=1 or leave it out")  # fmt: skip
    parts = []
    for path in sources(name, config, fmt):
        try:
            part = READERS[fmt](path, hps.get("csv_weights", "0") == "1")
        except Exception as exc:  # noqa: BLE001 - numpy's, pyarrow's and protobuf's errors alike
            shown = os.path.relpath(path, f"{DATA}/{name}") if not path.endswith(f"{name}_0") else "its Pipe stream"
            raise ValueError(f"channel {name}: {shown} is not {WHAT[fmt]} ({exc})") from None
        if part is not None:
            parts.append(part)
    if not parts:
        return None
    try:
        loaded = combined(parts)
    except ValueError as exc:
        raise ValueError(f"channel {name}: {exc}") from None
    if len(hosts) == 1 or config.get("S3DistributionType") == "ShardedByS3Key":
        return loaded
    if loaded.queries is not None:
        raise ValueError(f"channel {name}: ranking data (qid:) on several instances must be sharded by query: "
                         "give each host whole queries in files of their own, with S3DistributionType ShardedByS3Key")
    share = slice(rank, None, len(hosts))  # every host has every row: each takes its share
    return Rows(loaded.features[share], loaded.labels[share], None if loaded.weights is None else loaded.weights[share])


def hosts_without(rows, hosts, rank):
    """The hosts that have no rows of a channel, as every host counts them."""
    import numpy as np
    import xgboost as xgb

    lacking = np.zeros(len(hosts), dtype=np.int64)
    lacking[rank] = int(rows is None)
    if xgb.collective.is_distributed():
        lacking = xgb.collective.allreduce(lacking, xgb.collective.Op.SUM)
    return [host for host, lacks in zip(hosts, lacking) if lacks]


# -- training -----------------------------------------------------------------


def matrix(rows):
    """A DMatrix of the rows; query ids as groups, each run of one id a group (XGBoost's qid= needs
    them sorted, files need not be)."""
    import numpy as np
    import xgboost as xgb

    group = None
    if rows.queries is not None:
        starts = np.flatnonzero(np.diff(rows.queries)) + 1
        group = np.diff(np.concatenate([[0], starts, [len(rows.queries)]]))
    return xgb.DMatrix(rows.features, label=rows.labels, weight=rows.weights, group=group)


def params_from(hps):
    params = {}
    for key, value in hps.items():
        if key in OWN or key.startswith("sagemaker_"):
            continue
        if key == "eval_metric":
            params[key] = [m.strip() for m in value.split(",") if m.strip()]
            continue
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                continue
        params[key] = value
    tuned = hps.get("_tuning_objective_metric", "")
    if ":" in tuned:  # validation:auc -> auc, evaluated last so that early stopping watches it
        metric = tuned.split(":", 1)[1]
        params["eval_metric"] = [m for m in params.get("eval_metric", []) if m != metric] + [metric]
    # The instance's CPUs (SM_NUM_CPUS, as the platform caps them), not every CPU the machine shows.
    params.setdefault("nthread", int(os.environ.get("SM_NUM_CPUS") or os.cpu_count() or 1))
    return params


def checkpoint_rounds():
    rounds = {}
    for path in glob.glob(f"{CHECKPOINTS}/xgboost-checkpoint.*"):
        m = re.search(r"xgboost-checkpoint\.(\d+)$", path)
        if m:
            rounds[int(m.group(1))] = path
    return rounds


def agreed(value, op):
    """`value` reduced over the hosts (max or min): what every host decides alike."""
    import numpy as np
    import xgboost as xgb

    if not xgb.collective.is_distributed():
        return value
    return int(xgb.collective.allreduce(np.array([value], dtype=np.int64), op)[0])


def resume_point():
    """(rounds done, path) of the newest checkpoint every host has, or (0, None). Newer ones, which
    not every host has, are removed, so that none is later taken for one of this run's."""
    import xgboost as xgb

    found = checkpoint_rounds()
    newest = agreed(max(found, default=-1), xgb.collective.Op.MIN)
    while newest >= 0 and not agreed(int(newest in found), xgb.collective.Op.MIN):
        newest = agreed(max((i for i in found if i < newest), default=-1), xgb.collective.Op.MIN)
    for index, path in found.items():
        if index > newest:
            os.remove(path)
    if newest < 0:
        if found:
            print("no checkpoint that every host has: starting from round 0", flush=True)
        return 0, None
    return newest + 1, found[newest]


def address_of(host, seconds=300):
    """The IP address of a host of the job, waiting for its name to resolve."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return socket.gethostbyname(host)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


@contextlib.contextmanager
def collective(hosts, rank):
    """XGBoost's collective communication over the job's hosts, its tracker on the first."""
    import xgboost as xgb
    from xgboost.tracker import RabitTracker

    if len(hosts) == 1:
        yield
        return
    address = address_of(hosts[0])
    tracker = None
    if rank == 0:
        tracker = RabitTracker(n_workers=len(hosts), host_ip=address, port=TRACKER_PORT, sortby="task")
        tracker.start()
        print(f"tracker for {len(hosts)} hosts at {address}:{TRACKER_PORT}", flush=True)
    args = {"dmlc_tracker_uri": address, "dmlc_tracker_port": TRACKER_PORT, "dmlc_task_id": str(rank),
            "dmlc_retry": 60}  # fmt: skip
    with xgb.collective.CommunicatorContext(**args):
        yield
    if tracker is not None:
        tracker.wait_for()


def main():
    global CHECKPOINTS
    signal.signal(signal.SIGTERM, on_sigterm)
    CHECKPOINTS = read_json(f"{CONFIG}/checkpointconfig.json", {}).get("LocalPath", CHECKPOINTS)
    hps = read_json(f"{CONFIG}/hyperparameters.json", {})
    resources = read_json(f"{CONFIG}/resourceconfig.json", {})
    hosts = resources.get("hosts") or ["algo-1"]
    rank = hosts.index(resources.get("current_host", hosts[0]))
    if len(hosts) > 1:
        # Threads waiting on the other hosts sleep rather than spin: where instances share a machine's
        # cores, spinning threads starve the other instance (5x slower on 2 cores, measured).
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import xgboost as xgb  # after OMP_WAIT_POLICY: OpenMP reads it when XGBoost loads

    num_round = int(hps.get("num_round", "10"))
    every = int(hps.get("checkpoint_frequency", "5"))
    params = params_from(hps)
    train = load_channel("train", hps, hosts, rank)
    validation = load_channel("validation", hps, hosts, rank)
    with collective(hosts, rank):
        # Every host decides alike: a host without rows would leave the others waiting on it.
        for name, rows in (("train", train), ("validation", validation)):
            lacking = hosts_without(rows, hosts, rank)
            if lacking and (name == "train" or len(lacking) < len(hosts)):
                shard = " (a ShardedByS3Key channel needs a file per instance at least)" if len(hosts) > 1 else ""
                raise ValueError(f"channel {name}: no rows for {', '.join(lacking)}{shard}; give it data"
                                 + (", or make it FullyReplicated" if len(hosts) > 1 else ""))  # fmt: skip
        dtrain = matrix(train)
        evals = [(dtrain, "train")]
        if validation is not None:
            evals.append((matrix(validation), "validation"))

        done, path = resume_point()
        start_model = None
        if path:
            start_model = xgb.Booster(model_file=path)
            print(f"resuming from checkpoint {path} at round {done} of {num_round}", flush=True)

        class Checkpoint(xgb.callback.TrainingCallback):
            def after_iteration(self, model, epoch, evals_log):
                index = done + epoch  # SageMaker's name: the 0-based round the checkpoint ends with
                rounds = index + 1
                stopping = bool(agreed(int(bool(SIGTERM_SEEN)), xgb.collective.Op.MAX))  # every host stops alike
                if os.path.isdir(CHECKPOINTS) and (rounds % every == 0 or rounds == num_round or stopping):
                    # Written whole under a temporary name (.ubj picks the format), then renamed,
                    # so a checkpoint sync never sees half a file.
                    tmp = f"{CHECKPOINTS}/.xgboost-checkpoint.{index}.ubj"
                    model.save_model(tmp)
                    os.replace(tmp, f"{CHECKPOINTS}/xgboost-checkpoint.{index}")
                    for old in sorted(checkpoint_rounds().items())[:-KEEP_CHECKPOINTS]:
                        os.remove(old[1])
                if stopping:
                    print(f"SIGTERM: checkpointed round {rounds} of {num_round}, stopping", flush=True)
                    raise Stop("stopped by SIGTERM")
                return False

        class Report(xgb.callback.TrainingCallback):
            # One SageMaker-style line per round, round numbers continuing across resumes.
            def after_iteration(self, model, epoch, evals_log):
                fields = [f"{data}-{metric}:{values[-1]:.5f}"
                          for data, metrics in evals_log.items() for metric, values in metrics.items()]
                print(f"[{done + epoch}]\t" + "\t".join(fields), flush=True)
                return False

        remaining = max(num_round - done, 0)
        early = hps.get("early_stopping_rounds")
        booster = xgb.train(
            params, dtrain, num_boost_round=remaining, evals=evals, xgb_model=start_model,
            early_stopping_rounds=int(early) if early else None, verbose_eval=False,
            callbacks=[Report(), Checkpoint()],
        ) if remaining else start_model  # fmt: skip
    if rank == 0:  # the hosts hold one model; the first saves it
        os.makedirs(f"{ML}/model", exist_ok=True)
        booster.save_model(f"{ML}/model/xgboost-model.ubj")
        os.replace(f"{ML}/model/xgboost-model.ubj", f"{ML}/model/xgboost-model")
        print(f"saved model after {booster.num_boosted_rounds()} rounds to {ML}/model/xgboost-model", flush=True)


if __name__ == "__main__":
    try:
        main()
    except Stop as stop:
        print(str(stop), file=sys.stderr, flush=True)
        sys.exit(143)
    except Exception as exc:  # noqa: BLE001 - everything becomes the failure reason
        traceback.print_exc()
        os.makedirs(f"{ML}/output", exist_ok=True)
        with open(f"{ML}/output/failure", "w") as f:
            f.write(f"{type(exc).__name__}: {exc}")
        sys.exit(1)
