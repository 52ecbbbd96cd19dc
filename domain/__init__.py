"""Pure business rules: no I/O, no clocks, no randomness. Workflows and activities both call these."""
