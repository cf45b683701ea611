"""Echo servers for the benchmark, one module per target, each run in its own process."""
