"""tests/integration/test_zones_and_learning.py again, with DynamoDB on DynamoDB Local (see this folder's conftest)."""

from tests.integration.test_zones_and_learning import *  # noqa: F403  (re-collected here on purpose)
