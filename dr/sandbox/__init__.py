"""The local sandbox platform: a Kubernetes API emulator served by a background process.

Reached by the rest of `dr` only over HTTPS and a kubeconfig, never imported
(the import-linter contract in pyproject.toml enforces that): `dr sandbox
up` starts `python -m dr.sandbox serve` through `dr/adapters/sandbox_process.py`.
The simulated controllers arrive with sandbox part 2.
"""
