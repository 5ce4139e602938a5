"""tests/integration/test_dead_letters.py again, with DynamoDB on DynamoDB Local (its stream and conditional writes)."""

from tests.integration.test_dead_letters import *  # noqa: F403  (re-collected here on purpose)

