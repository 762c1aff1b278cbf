"""Behaviour: features from ledger events, rule detectors, the isolation forest and the review queue.

Reads `audit` and `authz`; nothing here yet (see the open issues).
"""
