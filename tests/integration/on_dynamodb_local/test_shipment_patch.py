"""tests/integration/test_shipment_patch.py again, with DynamoDB on DynamoDB Local (its transactions, conditions
and stream: concurrent PATCHes lose nothing, the pipeline follows a new location)."""

from tests.integration.test_shipment_patch import *  # noqa: F403  (re-collected here on purpose)
