"""Adapters that mount ws4web handlers on web stacks; each imports its framework lazily."""
