"""The local sandbox platform: a Kubernetes API emulator and simulated controllers in a background process.

Reached by the rest of `dr` only over HTTPS and a kubeconfig, never imported
(the import-linter contract in pyproject.toml enforces that): `dr sandbox
up` starts `python -m dr.sandbox serve` through `dr/adapters/sandbox_process.py`.
The API is `apiserver`/`store`/`resources`; the controllers (`workloads`,
`vaultpods`, `argocd`, `eso`, sharing `loop` and `kube`) talk to it over
HTTPS like real ones; `daemon` runs them all from one directory.
"""
