"""tests/integration/test_eta_truth.py again, with DynamoDB on DynamoDB Local (see this folder's conftest)."""

from tests.integration.test_eta_truth import *  # noqa: F403  (re-collected here on purpose)
