"""tests/integration/test_external_ref.py again, with DynamoDB on DynamoDB Local (see this folder's conftest)."""

from tests.integration.test_external_ref import *  # noqa: F403  (re-collected here on purpose)
