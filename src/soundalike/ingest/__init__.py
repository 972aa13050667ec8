"""Ingest: scan folders, analyze files (locally or on a Ray cluster), commit to the catalog.

``plan`` decides how much of each track is analyzed (the analysis budget);
``ray_runner`` runs the analysis on a Ray cluster.  The local pool and the commit
path live in :mod:`soundalike.catalog.ingest` for now.
"""
