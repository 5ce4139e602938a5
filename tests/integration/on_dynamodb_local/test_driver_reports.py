"""tests/integration/test_driver_reports.py again, with DynamoDB on DynamoDB Local (see this folder's conftest)."""

from tests.integration.test_driver_reports import *  # noqa: F403  (re-collected here on purpose)
