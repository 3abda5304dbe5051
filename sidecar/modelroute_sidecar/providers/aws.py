"""AWS for the `bedrock` provider through botocore, its maintained library: SigV4 request signing and
the decoding of the event-stream frames of ConverseStream; and the access key read from a Secret.

botocore is imported only when a config has a bedrock endpoint (first use), so a sidecar without one
pays nothing for it. Pure but for the signing clock.
"""

from __future__ import annotations

import configparser
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


class AwsKeyError(ValueError):
    """A bedrock credential that is no AWS access key; the message never holds the secret."""


@dataclass(frozen=True, slots=True)
class AwsKeys:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def __repr__(self) -> str:  # never the secret, whatever logs it
        return f"AwsKeys(access_key_id={self.access_key_id[:4]}...)"


def parse_keys(text: str) -> AwsKeys:
    """An access key from JSON (`accessKeyId`, `secretAccessKey`, `sessionToken`, or the AWS CLI's
    `AccessKeyId` spelling) or an AWS credentials file (its first profile)."""
    text = text.strip()
    values: dict[str, Any]
    if text.startswith("{"):
        try:
            values = {k.lower(): v for k, v in json.loads(text).items()}
        except (ValueError, AttributeError):
            raise AwsKeyError("the bedrock credential is not a JSON object") from None
        found = (values.get("accesskeyid"), values.get("secretaccesskey"), values.get("sessiontoken"))
    else:
        parser = configparser.ConfigParser(interpolation=None)  # a `%` in a secret is a character
        try:
            parser.read_string(text if text.startswith("[") else "[default]\n" + text)
        except configparser.Error:
            raise AwsKeyError("the bedrock credential is neither JSON nor an AWS credentials file") from None
        section = parser[parser.sections()[0]] if parser.sections() else {}
        found = (
            section.get("aws_access_key_id"),
            section.get("aws_secret_access_key"),
            section.get("aws_session_token"),
        )
    key_id, secret, token = found
    if not isinstance(key_id, str) or not isinstance(secret, str) or not key_id or not secret:
        raise AwsKeyError("the bedrock credential lacks accessKeyId or secretAccessKey")
    return AwsKeys(key_id, secret, token if isinstance(token, str) and token else None)


def sign(keys: AwsKeys, region: str, url: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
    """`headers` plus the SigV4 headers (`authorization`, `x-amz-date`, `x-amz-security-token`) of a POST
    of `body` to `url` for the `bedrock` service in `region`. Every header given is signed."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="POST", url=url, data=body, headers=dict(headers))
    SigV4Auth(
        Credentials(keys.access_key_id, keys.secret_access_key, keys.session_token), "bedrock", region
    ).add_auth(request)
    return {name.lower(): value for name, value in request.headers.items()}


class EventFrames:
    """AWS event-stream frames (`application/vnd.amazon.eventstream`) to (event type, payload,
    exception type) triples; a frame with a bad checksum or length raises ValueError."""

    def __init__(self) -> None:
        from botocore.eventstream import EventStreamBuffer

        self._buffer = EventStreamBuffer()

    def feed(self, data: bytes) -> Iterator[tuple[str, bytes, str]]:
        from botocore.eventstream import ParserError

        self._buffer.add_data(data)
        try:
            for message in self._buffer:
                headers = message.headers
                kind = str(headers.get(":message-type", "event"))
                if kind == "event":
                    yield str(headers.get(":event-type", "")), message.payload, ""
                else:
                    yield (
                        "",
                        message.payload,
                        str(headers.get(":exception-type") or headers.get(":error-code") or kind),
                    )
        except ParserError as exc:
            raise ValueError(f"bad event-stream frame: {exc.__class__.__name__}") from None
