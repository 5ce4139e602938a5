"""tests/integration/test_failed_loop.py again, with DynamoDB on DynamoDB Local (see this folder's conftest)."""

from tests.integration.test_failed_loop import *  # noqa: F403  (re-collected here on purpose)
