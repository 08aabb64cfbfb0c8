"""Recovery: the seven-step plan that rebuilds the platform on a fresh cluster."""
