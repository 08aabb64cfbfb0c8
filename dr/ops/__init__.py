"""Day-2 operations outside a recovery run: Vault status and unseal."""
