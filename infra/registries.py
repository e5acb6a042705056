"""Image registry credentials beyond Docker's own config: ECR tokens."""

from __future__ import annotations

import base64

from dockyard.errors import InfraError


def ecr_auth(region: str) -> dict[str, str]:
    """Docker auth for an ECR registry, from an authorization token via boto3.

    Raises:
        InfraError: no AWS credentials, or ECR refused the token.
    """
    import boto3
    import botocore.exceptions

    try:
        data = boto3.client("ecr", region_name=region).get_authorization_token()["authorizationData"][0]
    except botocore.exceptions.NoCredentialsError as exc:
        raise InfraError(f"ECR in {region} needs AWS credentials — set AWS_PROFILE or AWS_ACCESS_KEY_ID") from exc
    user, password = base64.b64decode(data["authorizationToken"]).decode().split(":", 1)
    return {"username": user, "password": password, "serveraddress": data["proxyEndpoint"]}
