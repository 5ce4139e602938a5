"""Chain of custody: completion requirements, PINs, parcel scans, the hash-chained custody log, signed receipts."""
