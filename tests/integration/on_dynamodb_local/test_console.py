"""tests/integration/test_console.py again, with DynamoDB on DynamoDB Local (see this folder's conftest)."""

from tests.integration.test_console import *  # noqa: F403  (re-collected here on purpose)
