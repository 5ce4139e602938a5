"""tests/integration/test_merchant_api.py again, with DynamoDB on DynamoDB Local (see this folder's conftest)."""

from tests.integration.test_merchant_api import *  # noqa: F403  (re-collected here on purpose)
