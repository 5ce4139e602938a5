"""tests/integration/test_index_projections.py again, on DynamoDB Local: it returns only what an index projects."""

from tests.integration.test_index_projections import *  # noqa: F403  (re-collected here on purpose)
