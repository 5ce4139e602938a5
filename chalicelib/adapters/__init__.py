"""Off-the-shelf driver apps: protocol translation into the native ping ingest.

`traccar` (OsmAnd / Traccar Client) and `owntracks` (OwnTracks HTTP mode) turn a
request into native ping items plus the protocol's own answers. They are pure
(no AWS): a thin route authenticates the device, then hands the items to the same
ingest path as `POST /v1/pings`, so there is one validation (`models.parse_ping`)
and one storage path.
"""
