"""The catalog schema, as an ordered list of migrations shared by every backend.

How to add a table or a column (musical attributes, waveform peaks, playlists ...)
-------------------------------------------------------------------------------------
1. Append one :class:`Migration` to :data:`MIGRATIONS`; never edit a released one.
   ``SCHEMA_VERSION`` is ``len(MIGRATIONS)``, so every backend moves to the new version.
2. Write its DDL once in ``sql`` with the dialect tokens ``{bigint}`` (64-bit int),
   ``{real}`` (double), ``{blob}`` (bytes) and ``{identity}`` (an auto-numbered primary
   key); they become the right type on SQLite and on PostgreSQL
   (:meth:`~soundalike.catalog.backends.Dialect.ddl`).  Statements are separated by
   ``;`` (on SQLite a ``CREATE TRIGGER ... BEGIN ...; END`` stays one statement).  Keep to SQL both speak: ``CREATE TABLE/INDEX``, ``ALTER TABLE ... ADD COLUMN``
   (with a ``DEFAULT`` when ``NOT NULL``), ``INSERT``/``UPDATE``.
3. Only where the two must differ (SQLite cannot ``ALTER`` a constraint; PostgreSQL has
   no ``rowid``), give ``sqlite=`` and/or ``postgresql=`` texts that replace ``sql``.
4. Add the queries as named methods on :class:`~soundalike.catalog.store.Catalog`.
5. Test: ``tests/test_catalog_store.py`` opens a v1 file built from the old DDL and
   checks the migration; the parametrised ``catalog`` fixture runs it on both backends.

Each migration runs in its own transaction together with the version bump, so a
crash mid-migration leaves the previous version intact.  A catalog written by a newer
soundalike is refused, never modified.
"""

from __future__ import annotations

from dataclasses import dataclass

from soundalike.catalog.backends import Backend
from soundalike.errors import CatalogError


@dataclass(frozen=True)
class Migration:
    """One schema step: DDL for every backend, with optional per-backend replacements."""

    description: str
    sql: str
    sqlite: str | None = None
    postgresql: str | None = None

    def text_for(self, dialect_name: str) -> str:
        own = self.sqlite if dialect_name == "sqlite" else self.postgresql
        return own if own is not None else self.sql


#: The first schema, exactly as soundalike 0.1 wrote it (v1 files exist in the wild).
V1_DDL = """
    CREATE TABLE tracks (
        id            {identity},
        path          TEXT NOT NULL UNIQUE,
        content_hash  TEXT NOT NULL,
        size          {bigint} NOT NULL,
        mtime         {real} NOT NULL,
        duration_s    {real},
        sr            {bigint},
        channels      {bigint},
        format        TEXT,
        title         TEXT,
        artist        TEXT,
        album         TEXT,
        genre         TEXT,
        year          {bigint},
        status        TEXT NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'missing')),
        added_at      {real} NOT NULL,
        updated_at    {real} NOT NULL
    );
    CREATE INDEX tracks_hash ON tracks(content_hash);
    CREATE INDEX tracks_status ON tracks(status);
    CREATE TABLE tags (
        track_id    {bigint} NOT NULL REFERENCES tracks(id) ON DELETE CASCADE,
        tag         TEXT NOT NULL,
        category    TEXT NOT NULL,
        source      TEXT NOT NULL CHECK (source IN ('file', 'user', 'model', 'suggested')),
        confidence  {real} NOT NULL DEFAULT 1.0,
        model_id    TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (track_id, category, tag, source, model_id)
    );
    CREATE INDEX tags_lookup ON tags(category, tag);
    CREATE TABLE models (
        model_id        TEXT PRIMARY KEY,
        name            TEXT NOT NULL,
        dim             {bigint} NOT NULL,
        labels          TEXT NOT NULL DEFAULT '[]',
        label_category  TEXT NOT NULL DEFAULT 'tag',
        created_at      {real} NOT NULL
    );
    CREATE TABLE analyses (
        track_id     {bigint} NOT NULL REFERENCES tracks(id) ON DELETE CASCADE,
        model_id     TEXT NOT NULL REFERENCES models(model_id),
        embedding    {blob} NOT NULL,
        dim          {bigint} NOT NULL,
        predictions  TEXT NOT NULL DEFAULT '{{}}',
        created_at   {real} NOT NULL,
        PRIMARY KEY (track_id, model_id)
    );
    CREATE INDEX analyses_model ON analyses(model_id);
    CREATE TABLE ingest_errors (
        id          {identity},
        path        TEXT NOT NULL,
        reason      TEXT NOT NULL,
        error_type  TEXT NOT NULL,
        size        {bigint},
        mtime       {real},
        time        {real} NOT NULL
    );
    CREATE INDEX ingest_errors_path ON ingest_errors(path)
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration("initial schema", V1_DDL),
    Migration(
        "explicit change marker: analyses.version from the catalog's change counter",
        # The counter is bumped once per writing transaction (Catalog.transaction); the
        # row lock it takes orders concurrent writers, so versions commit in increasing
        # order and "version > what I synced" never misses a re-made analysis.
        """
        CREATE TABLE counters (name TEXT PRIMARY KEY, value {bigint} NOT NULL);
        ALTER TABLE analyses ADD COLUMN version {bigint} NOT NULL DEFAULT 0;
        UPDATE analyses SET version = 1;
        INSERT INTO counters (name, value) VALUES ('change', 1);
        CREATE INDEX analyses_model_version ON analyses(model_id, version)
        """,
        # v1 SQLite files: keep the old rowid order as the first versions
        sqlite="""
        CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        ALTER TABLE analyses ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
        UPDATE analyses SET version = rowid;
        INSERT INTO counters (name, value) VALUES ('change', (SELECT coalesce(max(rowid), 0) + 1 FROM analyses));
        CREATE INDEX analyses_model_version ON analyses(model_id, version)
        """,
    ),
    Migration(
        "tracks.inode and tracks.device: the file's identity at ingest, so the server sends a "
        "file only while it still is the one ingested (NULL for rows ingested before)",
        """
        ALTER TABLE tracks ADD COLUMN inode {bigint};
        ALTER TABLE tracks ADD COLUMN device {bigint}
        """,
    ),
    Migration(
        "waveform peaks per track; favourites; saved playlists; indexes for bare-word search and "
        "the length slider/sort",
        # peaks.content_hash is the file's hash when its peaks were made: a changed file
        # has stale peaks (Catalog.get_peaks ignores them, ids_without_peaks lists it).
        # favourites and playlists are the catalog's own (one listener per catalog).
        """
        CREATE TABLE peaks (
            track_id      {bigint} PRIMARY KEY REFERENCES tracks(id) ON DELETE CASCADE,
            format        TEXT NOT NULL,
            duration_s    {real} NOT NULL,
            data          {blob} NOT NULL,
            content_hash  TEXT NOT NULL,
            created_at    {real} NOT NULL
        );
        CREATE TABLE favourites (
            track_id  {bigint} PRIMARY KEY REFERENCES tracks(id) ON DELETE CASCADE,
            added_at  {real} NOT NULL
        );
        CREATE TABLE playlists (
            id          {identity},
            name        TEXT NOT NULL UNIQUE,
            created_at  {real} NOT NULL,
            updated_at  {real} NOT NULL
        );
        CREATE TABLE playlist_tracks (
            playlist_id  {bigint} NOT NULL REFERENCES playlists(id) ON DELETE CASCADE,
            position     {bigint} NOT NULL,
            track_id     {bigint} NOT NULL REFERENCES tracks(id) ON DELETE CASCADE,
            added_at     {real} NOT NULL,
            PRIMARY KEY (playlist_id, position)
        );
        CREATE INDEX playlist_tracks_track ON playlist_tracks(playlist_id, track_id);
        CREATE INDEX tags_tag ON tags(tag);
        CREATE INDEX tracks_status_duration ON tracks(status, duration_s)
        """,
    ),
    Migration(
        "catalog adaptations: a fitted projection of one model's vectors, a model of its own",
        # model_id is the adapted model's id (also a row of models); data is the
        # serialised soundalike.models.adapt.Adaptation that maps base vectors to it.
        """
        CREATE TABLE adaptations (
            model_id       TEXT PRIMARY KEY REFERENCES models(model_id),
            base_model_id  TEXT NOT NULL REFERENCES models(model_id),
            method         TEXT NOT NULL,
            data           {blob} NOT NULL,
            created_at     {real} NOT NULL
        );
        CREATE INDEX adaptations_base ON adaptations(base_model_id)
        """,
    ),
    Migration(
        "what made each analysis: analyses.analysis 'full' or 'spread:N' (soundalike.ingest.plan)",
        """
        ALTER TABLE analyses ADD COLUMN analysis TEXT NOT NULL DEFAULT 'full'
        """,
    ),
    Migration(
        "musical attributes per track: tempo, key, loudness, vocals, energy, decoded length",
        # Numbers with their confidences, one row per track (not tags: ranges and
        # neighbourhoods are asked of them).  ``version`` names the attribute code
        # (audio.attributes.ATTRIBUTES_VERSION) so a refresh can find stale rows;
        # ``model_id`` names the tagger whose outputs gave vocals and energy.
        """
        CREATE TABLE track_attributes (
            track_id          {bigint} PRIMARY KEY REFERENCES tracks(id) ON DELETE CASCADE,
            duration_s        {real},
            bpm               {real},
            bpm_confidence    {real},
            bpm_alternative   {real},
            bpm_ambiguous     {bigint},
            key_tonic         {bigint},
            key_mode          TEXT,
            camelot           TEXT,
            key_confidence    {real},
            loudness_lufs     {real},
            loudness_range_lu {real},
            vocals            {real},
            energy            {real},
            model_id          TEXT NOT NULL DEFAULT '',
            version           {bigint} NOT NULL DEFAULT 1,
            seconds_read      {real},
            computed_at       {real} NOT NULL
        );
        CREATE INDEX track_attributes_bpm ON track_attributes(bpm);
        CREATE INDEX track_attributes_camelot ON track_attributes(camelot)
        """,
    ),
    Migration(
        "a text index over title, artist, album and file name, for substring search "
        "(SQLite: FTS5 trigram table kept by triggers; PostgreSQL: pg_trgm GIN indexes)",
        # Substring search (``moon``, ``title:riv``, ``q=``) scanned every row: 0.3-3 s at
        # 100k tracks.  Trigrams index substrings of 3+ characters; the query layer
        # (catalog/query.py) uses the index to find candidates and keeps its exact
        # substring test, so results are the same with and without it.  SQLite keeps a
        # copy of the four texts in an FTS5 table maintained by triggers (every insert,
        # update and delete of a track, whatever code writes it); PostgreSQL indexes the
        # very expressions the queries compare.
        "",
        sqlite="""
        CREATE VIRTUAL TABLE track_text USING fts5(title, artist, album, file, tokenize = 'trigram');
        INSERT INTO track_text (rowid, title, artist, album, file)
            SELECT id, coalesce(title, ''), coalesce(artist, ''), coalesce(album, ''),
                   replace(path, rtrim(path, replace(path, '/', '')), '') FROM tracks;
        CREATE TRIGGER track_text_insert AFTER INSERT ON tracks BEGIN
            INSERT INTO track_text (rowid, title, artist, album, file)
            VALUES (new.id, coalesce(new.title, ''), coalesce(new.artist, ''), coalesce(new.album, ''),
                    replace(new.path, rtrim(new.path, replace(new.path, '/', '')), ''));
        END;
        CREATE TRIGGER track_text_update AFTER UPDATE OF id, title, artist, album, path ON tracks BEGIN
            DELETE FROM track_text WHERE rowid = old.id;
            INSERT INTO track_text (rowid, title, artist, album, file)
            VALUES (new.id, coalesce(new.title, ''), coalesce(new.artist, ''), coalesce(new.album, ''),
                    replace(new.path, rtrim(new.path, replace(new.path, '/', '')), ''));
        END;
        CREATE TRIGGER track_text_delete AFTER DELETE ON tracks BEGIN
            DELETE FROM track_text WHERE rowid = old.id;
        END
        """,
        postgresql="""
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
        CREATE INDEX tracks_title_trgm ON tracks USING gin (lower(coalesce(title, '')) gin_trgm_ops);
        CREATE INDEX tracks_artist_trgm ON tracks USING gin (lower(coalesce(artist, '')) gin_trgm_ops);
        CREATE INDEX tracks_album_trgm ON tracks USING gin (lower(coalesce(album, '')) gin_trgm_ops);
        CREATE INDEX tracks_file_trgm ON tracks USING gin (lower(regexp_replace(path, '^.*/', '')) gin_trgm_ops)
        """,
    ),
    Migration(
        "per-segment vectors: a few vectors per track and model, for matching a short clip "
        "against the part of a track it came from",
        # One row per track and model: ``starts`` float32 (n,) seconds into the track,
        # ``vectors`` float16 (n, dim), each row unit length (what a cosine needs, at half
        # the bytes of float32).  ``version`` is the change counter, as analyses.version.
        """
        CREATE TABLE segments (
            track_id    {bigint} NOT NULL REFERENCES tracks(id) ON DELETE CASCADE,
            model_id    TEXT NOT NULL REFERENCES models(model_id),
            n           {bigint} NOT NULL,
            dim         {bigint} NOT NULL,
            starts      {blob} NOT NULL,
            vectors     {blob} NOT NULL,
            version     {bigint} NOT NULL DEFAULT 0,
            created_at  {real} NOT NULL,
            PRIMARY KEY (track_id, model_id)
        );
        CREATE INDEX segments_model_version ON segments(model_id, version)
        """,
    ),
    Migration(
        "tracks.version: the change counter of the last transaction that changed a track's row, "
        "tags or attributes, so the browse tables are updated from the few changed tracks",
        # Set by every Catalog write of tracks, tags and track_attributes, after the
        # transaction's counter bump (so it is that commit's token; see Catalog._bump):
        # "version > the token a table was built at" names every track it must re-read
        # (Catalog.browse_changes).  Rows already there keep 0: older than any table.
        """
        ALTER TABLE tracks ADD COLUMN version {bigint} NOT NULL DEFAULT 0;
        CREATE INDEX tracks_version ON tracks(version)
        """,
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(backend: Backend, *, upto: int | None = None) -> int:
    """Bring the database up to :data:`SCHEMA_VERSION` (or ``upto``, for tests that build an
    older catalog); returns the version it had.

    Raises
    ------
    CatalogError
        The database was written by a newer soundalike.
    """
    first = version = backend.get_schema_version()
    target = SCHEMA_VERSION if upto is None else min(int(upto), SCHEMA_VERSION)
    while True:
        if version > SCHEMA_VERSION:
            raise CatalogError(
                f"{backend.location}: catalog schema v{version} is newer than this soundalike "
                f"(v{SCHEMA_VERSION}); upgrade soundalike")
        if version >= target:
            return first
        # several processes may open a new catalog at once: one migrates, the others wait
        # for it and find the work done (SQLite: BEGIN IMMEDIATE already serialises them)
        with backend.schema_lock():
            backend.begin()
            try:
                if backend.get_schema_version() == version:
                    backend.run_script(backend.dialect.ddl(MIGRATIONS[version].text_for(backend.dialect.name)))
                    backend.set_schema_version(version + 1)
            except BaseException:
                backend.rollback()
                raise
            backend.commit()
        version = backend.get_schema_version()
