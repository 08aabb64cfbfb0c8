"""Game-day drills: build a throwaway platform, destroy it, recover it, and prove what came back."""
