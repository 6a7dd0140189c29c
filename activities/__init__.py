"""Temporal activities: all I/O of the node lifecycle, each a thin call into controlplane/."""
