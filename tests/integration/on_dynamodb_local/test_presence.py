"""tests/integration/test_presence.py again, with DynamoDB on DynamoDB Local (see this folder's conftest)."""

from tests.integration.test_presence import *  # noqa: F403  (re-collected here on purpose)
