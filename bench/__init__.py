"""Doorstep benchmarks: `python -m bench` prints one JSON object per figure on stdout.

Kept empty on purpose: `python -m bench.rss --child` imports this package in the
process whose peak RSS is measured, so nothing heavy may be imported here.
"""
