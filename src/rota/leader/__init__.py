"""Leader duties: the projector and the reconciler (later: scheduler tick, event
intake, supervisor)."""
