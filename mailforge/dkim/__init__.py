"""DKIM keys: generation, lifecycle, and the signer's key and signing tables."""
