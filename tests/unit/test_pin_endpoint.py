"""`storage.session.pin_endpoint`: the hot client resolves DynamoDB's endpoint rule set once per operation, and
sends every request where an unpinned client would."""

from __future__ import annotations

from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.config import Config

from chalicelib.storage.session import create_client, pin_endpoint


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Any:
        yield self.body


def _client(sent: list[tuple[str, str]]) -> Any:
    client = create_client(region_name="eu-central-1", endpoint_url="http://127.0.0.1:9",
                           aws_access_key_id="testing", aws_secret_access_key="testing",
                           config=Config(parameter_validation=False))

    def answer(request: Any, **_: Any) -> AWSResponse:
        target = request.headers["X-Amz-Target"]
        sent.append((request.url, (target.decode() if isinstance(target, bytes) else target).rsplit(".", 1)[-1]))
        return AWSResponse(request.url, 200, {"content-type": "application/x-amz-json-1.0"}, _Raw(b"{}"))

    client.meta.events.register_first("before-send.dynamodb", answer)
    return client


def _calls(client: Any) -> None:
    key = {"PK": {"S": "CUSTODY#shp_1"}, "SK": {"S": "HEAD"}}
    for _ in range(3):
        client.get_item(TableName="doorstep-test", Key=key)
        client.transact_write_items(TransactItems=[
            {"Put": {"TableName": "doorstep-test", "Item": key, "ConditionExpression": "attribute_not_exists(PK)"}}])


def test_the_endpoint_is_resolved_once_per_operation_and_requests_go_where_they_would() -> None:
    plain_sent: list[tuple[str, str]] = []
    _calls(_client(plain_sent))
    pinned_sent: list[tuple[str, str]] = []
    client = _client(pinned_sent)
    resolver = client._ruleset_resolver
    resolved: list[str] = []
    real = resolver.construct_endpoint

    def counting(operation_model: Any, call_args: Any, request_context: Any) -> Any:
        resolved.append(operation_model.name)
        return real(operation_model, call_args, request_context)

    resolver.construct_endpoint = counting
    assert pin_endpoint(pin_endpoint(client)) is client  # pinning twice wraps once
    _calls(client)
    assert resolved == ["GetItem", "TransactWriteItems"]
    assert pinned_sent == plain_sent and len(plain_sent) == 6
    assert {url for url, _ in pinned_sent} == {"http://127.0.0.1:9/"}
