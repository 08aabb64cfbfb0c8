"""AWS clients and the one place botocore errors become `dr.errors`.

Key sources (Secrets Manager, SSM) and the S3 snapshot store share this:
the standard credential chain, an optional endpoint for S3-compatible or
local services, retries left to botocore's "standard" mode, and errors that
say what could not be read or written and whether retrying can help.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Final

from dr import errors

# boto3/botocore are imported on first use: they cost ~0.3 s at start-up, and most
# commands (a file store, a Vault status) never talk to AWS.

TRANSIENT_CODES: Final = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "InternalServiceError",
        "InternalServerError",
        "ServiceUnavailable",
        "503",
        "500",
    }
)
# Credentials the server does not accept: no retry helps, the operator must fix them. XAdminUserNotFound is
# versitygw's word for an access key it does not know.
CREDENTIAL_CODES: Final = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "XAdminUserNotFound"}
)


def client(service: str, *, region: str | None = None, endpoint_url: str | None = None) -> Any:
    """A boto3 client from the standard credential chain."""
    import boto3
    import botocore.config

    config = botocore.config.Config(
        retries={"mode": "standard", "max_attempts": 5}, connect_timeout=10, read_timeout=60
    )
    return boto3.session.Session().client(service, region_name=region, endpoint_url=endpoint_url, config=config)


def error_code(exc: Exception) -> str:
    """The AWS error code of a ClientError ("NoSuchKey", "404", …), or "" for anything else."""
    import botocore.exceptions

    if not isinstance(exc, botocore.exceptions.ClientError):
        return ""
    return str(exc.response.get("Error", {}).get("Code", ""))


def translate(exc: Exception, what: str, *, runbook: str | None = None) -> errors.DRError:
    """The `dr.errors` form of a boto3/botocore exception raised while doing `what`."""
    import botocore.exceptions

    if isinstance(exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError):
        return errors.ConfigError(
            f"no AWS credentials to {what}",
            hint="provide credentials through the usual AWS chain (AWS_PROFILE, AWS_ACCESS_KEY_ID, an instance role)",
            runbook=runbook,
        )
    if isinstance(
        exc,
        botocore.exceptions.EndpointConnectionError
        | botocore.exceptions.ConnectTimeoutError
        | botocore.exceptions.ReadTimeoutError
        | botocore.exceptions.ConnectionClosedError,
    ):
        return errors.TransientError(f"cannot reach AWS to {what}: {exc}", runbook=runbook)
    if isinstance(exc, botocore.exceptions.ClientError):
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message", "")
        text = f"cannot {what}: {code}" + (f": {message}" if message else "")
        if code in TRANSIENT_CODES:
            return errors.TransientError(text, runbook=runbook)
        if code in CREDENTIAL_CODES:
            return errors.ConfigError(
                text,
                hint="the server refused the AWS credentials: check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or "
                "AWS_PROFILE, and that they belong to this endpoint",
                runbook=runbook,
            )
        return errors.PermanentError(text, runbook=runbook)
    return errors.PermanentError(f"cannot {what}: {exc}", runbook=runbook)


def is_aws_error(exc: BaseException) -> bool:
    import botocore.exceptions

    return isinstance(exc, botocore.exceptions.BotoCoreError | botocore.exceptions.ClientError)


@contextlib.contextmanager
def mapped(what: str, *, runbook: str | None = None) -> Iterator[None]:
    """Translate boto3/botocore exceptions raised inside the block."""
    try:
        yield
    except Exception as exc:
        if is_aws_error(exc):
            raise translate(exc, what, runbook=runbook) from exc
        raise
