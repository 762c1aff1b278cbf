"""Decisions: the Casbin policy, its administration, service tokens and /v1/authorize."""
