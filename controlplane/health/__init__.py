"""Fleet health: model probes and the cluster sweep, with costs that do not grow per node."""
