"""tests/integration/test_ping_chunks.py again, with DynamoDB on DynamoDB Local (see this folder's conftest)."""

from tests.integration.test_ping_chunks import *  # noqa: F403  (re-collected here on purpose)
