"""Delivery analytics: counters kept from the table stream, the merchant's figures per day, driver or zone."""
