"""The catalog: SQLite store (:mod:`.store`), ingest (:mod:`.ingest`) and the filter grammar (:mod:`.query`)."""
