"""Flower ClientApp side: the honest streaming client and the malicious client."""
