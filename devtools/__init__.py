"""Tools for development, tests, demos and benchmarks: the SkyPilot simulator and the local stack.

Nothing here runs in a production worker; ``controlplane/`` never imports it.
"""
