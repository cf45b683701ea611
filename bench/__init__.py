"""The benchmark suite: ws4web against its peers through one load client (run it with ``python -m bench``)."""
