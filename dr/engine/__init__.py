"""The step engine: steps, plans, the runner, checkpoints, locks and the waiting helper.

Nothing here knows about Vault or Kubernetes; the use cases (`dr.recovery`,
later snapshots and drills) declare steps and the engine makes them
resumable, retried, locked and timed.
"""
