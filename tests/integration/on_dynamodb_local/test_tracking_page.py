"""tests/integration/test_tracking_page.py again, with DynamoDB on DynamoDB Local (see this folder's conftest)."""

from tests.integration.test_tracking_page import *  # noqa: F403  (re-collected here on purpose)
