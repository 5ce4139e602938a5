"""tests/integration/test_scheduled.py again, with DynamoDB on DynamoDB Local (see this folder's conftest)."""

from tests.integration.test_scheduled import *  # noqa: F403  (re-collected here on purpose)
