"""Alembic revisions of the store schema, one per schema version (``000N`` is version N).

A package only so that setuptools ships these files; Alembic loads them by path.
"""
