"""tests/integration/test_exceptions.py again, with DynamoDB on DynamoDB Local (see this folder's conftest)."""

from tests.integration.test_exceptions import *  # noqa: F403  (re-collected here on purpose)
