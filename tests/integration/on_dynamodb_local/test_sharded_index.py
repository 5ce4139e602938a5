"""tests/integration/test_sharded_index.py again, on DynamoDB Local (its index queries, paging and conditions)."""

from tests.integration.test_sharded_index import *  # noqa: F403  (re-collected here on purpose)
