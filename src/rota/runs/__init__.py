"""Runs: the one module of run transitions (transitions.py), creation and dispatch
(service.py)."""
