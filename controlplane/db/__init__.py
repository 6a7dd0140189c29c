"""PostgreSQL storage: node rows, their append-only events, and sealed tenant credentials.

Importing the package is cheap; the SQLAlchemy-heavy modules (engine, repository, migrate) are
imported by name where they are needed.
"""
