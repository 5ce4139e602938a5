"""tests/integration/test_trackers.py again, with DynamoDB on DynamoDB Local (see this folder's conftest)."""

from tests.integration.test_trackers import *  # noqa: F403  (re-collected here on purpose)
