"""Events out of the outbox: the commit-ordered pull feed, the JetStream relay, GPU usage."""
