"""Game-day drills: build a throwaway platform, destroy it, recover it, and prove what came back.

The choices a drill offers live here, apart from `drill.py`, so that the CLI can name them in its options
without importing the drill (and with it the kubernetes client, hvac and the sandbox's provider).
"""

from typing import Final

SCENARIOS: Final = ("total-loss",)
FAULTS: Final = ("eso-unavailable",)  # sandbox knobs that make the recovery fail, to rehearse the failure path
