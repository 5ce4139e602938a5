"""tests/integration/test_route_operations.py again, with DynamoDB on DynamoDB Local (see this folder's conftest):
the version, active-route and completion conditions are the engine's."""

from tests.integration.test_route_operations import *  # noqa: F403  (re-collected here on purpose)
