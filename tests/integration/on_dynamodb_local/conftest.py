"""The integration modules of this folder run again with DynamoDB on DynamoDB Local, the engine AWS ships.

in-process moto is faithful for most behaviour, but not for the storage paths that matter most under
load: moto's transactions copy and restore the whole table, its condition checks and stream are its
own. Each module here re-collects one behaviour module (transactions, conditions or the stream) and
this folder's autouse fixture points the in-process app at DynamoDB Local for it: the pynamodb models,
the repository, and every plain boto3 DynamoDB/Streams client (through botocore's
AWS_ENDPOINT_URL_DYNAMODB[_STREAMS]). S3, SNS and SES stay on in-process moto. The table has the
test table's name, created from infra/resources.json, so the re-collected tests run unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from tests.conftest import TEST_ENV

ENDPOINT_VARIABLES = ("DOORSTEP_DYNAMODB_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB",
                      "AWS_ENDPOINT_URL_DYNAMODB_STREAMS")


def _models(root: type) -> Iterator[type]:
    for sub in root.__subclasses__():
        yield sub
        yield from _models(sub)


@pytest.fixture(scope="module", autouse=True)
def on_dynamodb_local(dynamodb_local: str, chalice_app: Any) -> Iterator[str]:
    from chalicelib import storage
    from chalicelib.core.config import get_settings
    from chalicelib.notifications import service as notifications_service
    from chalicelib.pipeline import service as pipeline_service
    from chalicelib.storage import tables
    from chalicelib.storage.repository import Repository
    from infra.local.resources import create_table

    client = boto3.client("dynamodb", endpoint_url=dynamodb_local)
    create_table(client, TEST_ENV["DOORSTEP_TABLE_NAME"])
    with pytest.MonkeyPatch.context() as patch:
        for name in ENDPOINT_VARIABLES:
            patch.setenv(name, dynamodb_local)
        patch.setenv("DOORSTEP_PIPELINE_WORKERS", "8")  # DynamoDB Local is thread-safe, as DynamoDB
        get_settings.cache_clear()
        patch.setattr(tables._Meta, "host", dynamodb_local)
        # pynamodb caches one connection per model class: dropped here, rebuilt against DynamoDB Local on
        # first use, and the moto ones put back when the patch is undone.
        for model in _models(tables.TableItem):
            patch.setattr(model, "_connection", None)
        patch.setattr(storage, "_replacement", Repository())
        patch.setattr(pipeline_service, "_repo", None)  # the stream consumer's per-container caches
        patch.setattr(notifications_service, "_parts", None)
        assert get_settings().ddb_endpoint_url == dynamodb_local
        yield dynamodb_local
    get_settings.cache_clear()
    _forget_sent_messages()
    # A fresh table per module: the next module must not see this one's items or stream.
    client.delete_table(TableName=TEST_ENV["DOORSTEP_TABLE_NAME"])


def _forget_sent_messages() -> None:
    """The in-process moto's SNS and SES outboxes outlive a module; the moto twins of these modules count
    the messages sent to their (fixed) test numbers and addresses, so this module's must not stay behind."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends
    from moto.sns.models import sns_backends

    sns_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sms_messages.clear()
    ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages.clear()
