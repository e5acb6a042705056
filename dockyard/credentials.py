"""A job's credentials, the pure part: the session policy that narrows its role to the job.

SageMaker hands each instance credentials for the job's role. dockyard assumes
the role for each job with a session policy of the job's own: the
credentials can do no more than the role allows and no more than this
policy allows, which is reading the job's input (its channels' S3 URIs, as
prefixes, as SageMaker reads an S3Prefix channel; a manifest channel's manifest
itself, not the objects it lists) and reading, writing and deleting under its
output (the job's own folder of `s3_output_path`) and its checkpoint folder.
"""

from __future__ import annotations

import json
from typing import Any

from dockyard.spec import TrainingJobSpec

SESSION_POLICY_LIMIT = 2048  # STS's limit on a packed session policy, in characters


def _bucket_and_key(uri: str) -> tuple[str, str]:
    """The bucket and key of an S3 URI, the key with IAM's wildcards and variable sign escaped."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    escaped = "".join(f"${{{c}}}" if c in "*?$" else c for c in key)
    return bucket, escaped


def _statements(action: list[str], uris: list[str]) -> list[dict[str, Any]]:
    """Allow `action` on the objects under each S3 URI, and listing those prefixes."""
    if not uris:
        return []
    located = [_bucket_and_key(u) for u in uris]
    statements: list[dict[str, Any]] = [
        {"Effect": "Allow", "Action": action, "Resource": sorted({f"arn:aws:s3:::{b}/{k}*" for b, k in located})}
    ]
    for bucket in sorted({b for b, _ in located}):
        prefixes = sorted({f"{k}*" for b, k in located if b == bucket})
        statements.append(
            {
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": [f"arn:aws:s3:::{bucket}"],
                "Condition": {"StringLike": {"s3:prefix": prefixes}},
            }
        )
    return statements


def job_locations(spec: TrainingJobSpec) -> tuple[list[str], list[str]]:
    """The job's S3 locations: (read-only ones, read-write ones)."""
    reads = [
        c.data_source.s3_data_source.s3_uri
        for c in spec.input_data_config
        if c.data_source.s3_data_source is not None and c.data_source.s3_data_source.s3_uri.startswith("s3://")
    ]
    output = spec.output_data_config.s3_output_path.rstrip("/") + f"/{spec.training_job_name}/"
    writes = [output] if output.startswith("s3://") else []
    if spec.checkpoint_config and spec.checkpoint_config.s3_uri.startswith("s3://"):
        writes.append(spec.checkpoint_config.s3_uri.rstrip("/") + "/")  # a folder: not its siblings named alike
    return reads, writes


def session_policy(spec: TrainingJobSpec) -> str:
    """The job's session policy, packed as STS takes it.

    Raises:
        ValueError: it is longer than STS takes (too many channels in too many buckets).
    """
    reads, writes = job_locations(spec)
    statements = _statements(["s3:GetObject"], reads)
    statements += _statements(["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"], writes)
    if not statements:  # no S3 location at all: credentials that can do nothing
        statements = [{"Effect": "Deny", "Action": "*", "Resource": "*"}]
    packed = json.dumps({"Version": "2012-10-17", "Statement": statements}, separators=(",", ":"))
    if len(packed) > SESSION_POLICY_LIMIT:
        raise ValueError(
            f"the job's session policy is {len(packed)} characters, over STS's {SESSION_POLICY_LIMIT}: "
            "put the input channels under fewer, shorter prefixes"
        )
    return packed
