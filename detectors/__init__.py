"""Behaviour: features from ledger events, rule detectors, the isolation forest and the review queue.

Reads `audit` and `authz` (and records its own work in the ledger); `app.py` wires it.
"""
