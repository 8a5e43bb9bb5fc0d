"""Integrations and ready-made job targets."""
