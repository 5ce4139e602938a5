"""Doorstep application code: domain (pure), models (pydantic), storage (adapters)."""
