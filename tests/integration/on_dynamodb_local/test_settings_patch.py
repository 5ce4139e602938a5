"""tests/integration/test_settings_patch.py again, with DynamoDB on DynamoDB Local (see this folder's conftest):
the PATCH's write is conditional on the settings it read."""

from tests.integration.test_settings_patch import *  # noqa: F403  (re-collected here on purpose)
