"""The local sandbox platform (Kubernetes API emulator, simulated controllers, real OpenBao).

Reached by the rest of `dr` only over HTTP and a kubeconfig, never imported:
the import-linter contract in pyproject.toml enforces that. Its modules
arrive with the sandbox issues.
"""
