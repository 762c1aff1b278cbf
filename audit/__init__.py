"""The audit ledger: hash-chained records, verification and the storage they live in.

Knows nothing of `authz` or `detectors`; they write to it and read from it.
"""
