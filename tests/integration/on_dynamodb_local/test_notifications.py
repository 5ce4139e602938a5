"""tests/integration/test_notifications.py again, with DynamoDB on DynamoDB Local (see this folder's conftest)."""

from tests.integration.test_notifications import *  # noqa: F403  (re-collected here on purpose)
