"""AWS Signature Version 4 on every request, verified by recomputing it with botocore's signer.

The principals (access key id and secret) come from DOCKYARD_ACCESS_KEY_ID /
DOCKYARD_SECRET_ACCESS_KEY, or from a keys file (DOCKYARD_KEYS_FILE) holding
several:

    principals:
      - {name: alice, access_key_id: AKIA..., secret_access_key: ...}
      - name: bob               # limited: see api/access.py
        access_key_id: AKIA...
        secret_access_key: ...
        actions: ["sagemaker:*TrainingJob*", "logs:*"]
        job_name_prefixes: ["bob-"]

Secrets stay in SecretStr and are never logged or answered.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from api.protocol import ApiError
from dockyard.errors import DockyardError
from dockyard.settings import Settings

MAX_SKEW = timedelta(minutes=15)  # AWS refuses a request dated further off than this
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<key>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/,\s]+)/(?P<service>[^/,\s]+)"
    r"/aws4_request,\s*SignedHeaders=(?P<headers>[^,\s]+),\s*Signature=(?P<signature>[0-9a-f]{64})"
)


class Principal(BaseModel):
    """Who may call: a name for the logs, a key pair for the signature."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    access_key_id: str
    secret_access_key: SecretStr
    actions: list[str] | None = None  # IAM action patterns it may call; None: all
    job_name_prefixes: list[str] | None = None  # the jobs it may name; None: all
    roles: list[str] | None = None  # role ARN patterns it may give its jobs (iam:PassRole); None: all


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    principals: list[Principal]


def load_principals(settings: Settings) -> dict[str, Principal]:
    """The configured principals by access key id.

    Raises:
        DockyardError: the keys file cannot be read or is malformed.
    """
    found: dict[str, Principal] = {}
    if settings.access_key_id and settings.secret_access_key:
        found[settings.access_key_id] = Principal(
            name="default", access_key_id=settings.access_key_id, secret_access_key=settings.secret_access_key
        )
    if settings.keys_file:
        path = Path(settings.keys_file)
        try:
            doc = yaml.safe_load(path.read_text())
            keys = KeysFile.model_validate(doc)
        except OSError as exc:
            raise DockyardError(
                f"DOCKYARD_KEYS_FILE {path}: cannot read it ({exc.strerror}) — check the path"
            ) from None
        except (yaml.YAMLError, ValidationError) as exc:
            problem = str(exc).splitlines()[0]
            raise DockyardError(
                f"DOCKYARD_KEYS_FILE {path}: {problem} — write `principals:` as a list of "
                "{name, access_key_id, secret_access_key} (and optionally actions, job_name_prefixes, roles)"
            ) from None
        found.update({p.access_key_id: p for p in keys.principals})
    return found


@dataclass(frozen=True)
class SignedRequest:
    """What of an HTTP request the signature covers."""

    method: str
    url: str  # scheme://host[:port]/path?query, as the client addressed it
    headers: Mapping[str, str]
    body: bytes


def verify(request: SignedRequest, principals: Mapping[str, Principal], now: datetime | None = None) -> Principal:
    """The principal whose key signed the request.

    Raises:
        ApiError: MissingAuthenticationTokenException (no signature),
            UnrecognizedClientException (an unknown key), InvalidSignatureException
            (a wrong signature, or a date more than 15 minutes off).
    """
    headers = {k.lower(): v for k, v in request.headers.items()}
    authorization = headers.get("authorization", "")
    if not authorization:
        raise ApiError(
            "MissingAuthenticationTokenException",
            "the request is not signed — sign it with AWS Signature Version 4 (any AWS SDK or CLI does) "
            "using a key pair this endpoint knows",
            403,
        )
    match = _AUTHORIZATION.fullmatch(authorization.strip())
    if match is None:
        raise ApiError(
            "InvalidSignatureException", "the Authorization header is not an AWS4-HMAC-SHA256 signature", 400
        )
    principal = principals.get(match["key"])
    if principal is None:
        raise ApiError("UnrecognizedClientException", "The security token included in the request is invalid.", 400)
    stamp = headers.get("x-amz-date", "")
    try:
        signed_at = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise ApiError("InvalidSignatureException", "X-Amz-Date is missing or not YYYYMMDDTHHMMSSZ", 400) from None
    moment = now or datetime.now(UTC)
    if abs(moment - signed_at) > MAX_SKEW:
        raise ApiError(
            "InvalidSignatureException",
            f"Signature expired: {stamp} is more than 15 minutes from the server's time "
            f"{moment:%Y%m%dT%H%M%SZ} — correct the client's clock",
            400,
        )
    signed = match["headers"].split(";")
    if "host" not in signed or any(h not in headers for h in signed):
        raise ApiError("InvalidSignatureException", "SignedHeaders must include host and name headers sent", 400)
    content_hash = headers.get("x-amz-content-sha256")
    if content_hash is not None and content_hash != hashlib.sha256(request.body).hexdigest():
        raise ApiError("InvalidSignatureException", "X-Amz-Content-SHA256 does not match the body sent", 400)
    aws_request = AWSRequest(
        method=request.method, url=request.url, headers={h: headers[h] for h in signed}, data=request.body
    )
    aws_request.context["timestamp"] = stamp
    signer = SigV4Auth(
        Credentials(principal.access_key_id, principal.secret_access_key.get_secret_value()),
        match["service"],
        match["region"],
    )
    canonical = signer.canonical_request(aws_request)
    expected = signer.signature(signer.string_to_sign(aws_request, canonical), aws_request)
    if match["date"] != stamp[:8] or not hmac.compare_digest(expected, match["signature"]):
        raise ApiError(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method.",
            400,
        )
    return principal
