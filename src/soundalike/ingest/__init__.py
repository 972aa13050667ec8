"""Ingest: scan folders, analyze new or changed audio, commit each file to the catalog.

:func:`ingest` is the entry point (:mod:`.pipeline` holds the scan, the worker-side
analysis and the per-file commit).  Ingest sits above the catalog and the models and
below the CLI: it opens files, runs analyzers and writes through ``Catalog`` methods.
"""

from soundalike.ingest.pipeline import (
    DEFAULT_TOP_TAGS,
    IngestSummary,
    analyze_file,
    content_hash,
    file_tags_as_tags,
    ingest,
    read_file_tags,
    scan,
)

__all__ = ["DEFAULT_TOP_TAGS", "IngestSummary", "analyze_file", "content_hash", "file_tags_as_tags",
           "ingest", "read_file_tags", "scan"]
