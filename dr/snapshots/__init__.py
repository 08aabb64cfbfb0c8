"""Snapshots: save, catalogue, verify, prune and schedule Vault Raft snapshots."""
