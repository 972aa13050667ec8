"""The filter grammar: a small, safe language to narrow the catalog by tags and metadata.

A filter is a list of *terms* separated by spaces; a track must match **every** term.

==========================================  ==============================================
Filter                                      Keeps tracks ...
==========================================  ==============================================
``genre:rock``                              tagged ``rock`` in category ``genre``
``genre:rock|pop``                          tagged ``rock`` **or** ``pop`` in ``genre``
``-mood:sad``                               **not** tagged ``sad`` in ``mood``
``genre:"hip hop"``                         quoted values may hold spaces
``instrument:piano -mood:sad``              terms AND together
``year:1990..1999``                         with ``1990 <= year <= 1999`` (inclusive)
``year:1990..`` / ``duration:..30``         open ranges (duration in seconds)
``year:1995`` / ``sr:22050|44100``          exact numbers, ``|`` ORs them too
``title:moon`` / ``artist:bach|handel``     title / artist / album containing the text
``file:banjo_a3``                           file name (not its folders) containing the text
``piano``                                   tagged ``piano`` in any category, or with
                                            ``piano`` in title, artist, album or file name
``"night train"``                           the same for a quoted phrase
``-noise``                                  negates a bare word as well
``bpm:118..124``                            tempo between 118 and 124 BPM
``key:8A|9A`` / ``key:am|c``                Camelot codes or key names (``c#m``, ``bb``)
``key:compatible``                          keys that mix with the query track's: same
                                            code, one step round the wheel, relative
                                            major/minor (``similar``/``playlist`` only)
``loudness:-16..-10``                       integrated loudness in LUFS
``vocals:no`` / ``vocals:yes``              vocals probability under / at least 0.5
``energy:0.6..`` / ``energy:high``          energy 0..1 (``low`` < 0.4 <= ``mid`` < 0.6 <= ``high``)
``duration:60..180``                        decoded length in seconds
==========================================  ==============================================

Numeric fields: ``year``, ``duration`` (seconds, the decoded length where the musical
attributes have it, else the header's), ``sr`` (Hz), ``channels``, ``id``; attribute fields
(``ingest`` computes them; ``ingest --refresh attributes`` for older catalogs): ``bpm``,
``loudness`` (LUFS), ``lra`` (loudness range, LU), ``energy``, ``key``, ``vocals`` (``yes``/``no``;
any other value is a tag of category ``vocals``, e.g. ``vocals:female``).
Text fields: ``title``, ``artist``, ``album``, ``file`` (the file's name).  Any other ``field:`` is a tag category
(``genre``, ``mood``, ``instrument``, ``tag`` ...).  Matching is case-insensitive: tags
are stored lower-case and values are lower-cased.  A negated term keeps tracks with no
value at all (``-year:1990..1999`` keeps tracks without a year).

Tags from the sources ``file``, ``user`` and ``model`` match; ``suggested`` tags (tag
completion) match only when the caller opts in with ``include_suggested=True``.

Filters are parsed into a small AST (:func:`parse`) and compiled (:func:`compile_sql`,
per backend :class:`~soundalike.catalog.backends.Dialect`) to SQL whose every value is a
bound ``?`` parameter, so no text of the filter ever becomes SQL.  The catalog runs
them: ``Catalog.match``, ``Catalog.page`` and ``Catalog.facets``.  Malformed filters raise :class:`~soundalike.errors.QueryError` naming the
character position and the reason.

>>> parse('genre:rock|pop -mood:sad year:1990..').terms[0].values
('rock', 'pop')
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from soundalike.catalog.backends import SQLITE, Dialect
from soundalike.errors import QueryError

#: Numeric fields and the ``tracks`` column each one compares.
NUMERIC_FIELDS: dict[str, str] = {
    "year": "year",
    "duration": "duration_s",
    "sr": "sr",
    "channels": "channels",
    "id": "id",
}
#: Numeric fields kept in ``track_attributes`` (alias ``a``) and their columns.
ATTRIBUTE_FIELDS: dict[str, str] = {
    "bpm": "bpm",
    "loudness": "loudness_lufs",
    "lra": "loudness_range_lu",
    "energy": "energy",
}
#: ``energy:`` words and the ranges they stand for.
ENERGY_WORDS: dict[str, tuple[float | None, float | None]] = {
    "low": (None, 0.4), "mid": (0.4, 0.6), "high": (0.6, None),
}
#: A vocals probability at or above this is ``vocals:yes``.
VOCALS_THRESHOLD = 0.5
#: Text fields and the ``tracks`` column each one searches (substring, case-insensitive).
TEXT_FIELDS: dict[str, str] = {"title": "title", "artist": "artist", "album": "album", "file": "path"}
#: Tag sources that always match; ``suggested`` is added on request.
BASE_SOURCES: tuple[str, ...] = ("file", "user", "model")
SUGGESTED = "suggested"

TermKind = Literal["tag", "numeric", "text", "any", "attribute", "key", "vocals"]

#: Most terms in one filter, and most ``|`` alternatives in one term: every term becomes
#: a nested SQL condition and SQLite refuses trees deeper than 1000 ("Expression tree is
#: too large"); these bounds keep the deepest one near 350 whatever the backend.
MAX_TERMS = 50
MAX_VALUES = 100

_FIELD_RE = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class Range:
    """An inclusive numeric range; ``None`` means unbounded on that side."""

    lo: float | None
    hi: float | None


@dataclass(frozen=True)
class Term:
    """One term of a filter.

    Attributes
    ----------
    kind : ``"tag"`` (category:value), ``"numeric"``, ``"text"`` (title/artist/album),
        ``"any"`` (bare word), ``"attribute"`` (bpm/loudness/lra/energy ranges), ``"key"``
        (Camelot codes, or ``"compatible"``) or ``"vocals"`` (``"yes"``/``"no"``)
    field : category or field name; ``None`` for bare words
    values : alternatives (ORed); strings, or :class:`Range` for numeric terms
    negated : whether the term was prefixed with ``-``
    pos : character offset of the term in the filter text
    """

    kind: TermKind
    field: str | None
    values: tuple[str | Range, ...]
    negated: bool = False
    pos: int = 0


@dataclass(frozen=True)
class Query:
    """A parsed filter: tracks must match every term (an empty query matches all)."""

    terms: tuple[Term, ...]
    text: str = ""

    def __bool__(self) -> bool:
        return bool(self.terms)

    def needs_reference(self) -> bool:
        """Whether a term (``key:compatible``) is relative to a query track."""
        return any(t.kind == "key" and "compatible" in t.values for t in self.terms)

    def tag_values(self) -> dict[str, set[str]]:
        """Positive tag values per category (used to explain hits)."""
        out: dict[str, set[str]] = {}
        for t in self.terms:
            if t.kind == "tag" and not t.negated:
                out.setdefault(t.field or "", set()).update(str(v) for v in t.values)
        return out


# --------------------------------------------------------------------------- parsing


def _read_value(text: str, i: int) -> tuple[str, int]:
    """Read one value starting at ``i`` (quoted or up to ``|``/space); return it and the end."""
    n = len(text)
    if i < n and text[i] == '"':
        j = text.find('"', i + 1)
        if j < 0:
            raise QueryError(f"position {i + 1}: unterminated quote in filter {text!r}")
        return text[i + 1 : j], j + 1
    j = i
    while j < n and not text[j].isspace() and text[j] != "|":
        if text[j] == '"':
            raise QueryError(f"position {j + 1}: unexpected quote inside a value in filter {text!r}")
        j += 1
    return text[i:j], j


def _number(s: str, pos: int, field: str, text: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise QueryError(f"position {pos + 1}: {field} needs a number or a range a..b, got {s!r}") from None
    if not math.isfinite(v):
        raise QueryError(f"position {pos + 1}: {field} needs a finite number, got {s!r}")
    return v


def _range(s: str, pos: int, field: str, text: str) -> Range:
    if ".." in s:
        a, _, b = s.partition("..")
        if ".." in b:
            raise QueryError(f"position {pos + 1}: malformed range {s!r} (use a..b, a.. or ..b)")
        lo = _number(a, pos, field, text) if a else None
        hi = _number(b, pos, field, text) if b else None
        if lo is None and hi is None:
            raise QueryError(f"position {pos + 1}: range {s!r} has no bound (use a..b, a.. or ..b)")
        if lo is not None and hi is not None and lo > hi:
            raise QueryError(f"position {pos + 1}: empty range {s!r}: {a} is greater than {b}")
        return Range(lo, hi)
    v = _number(s, pos, field, text)
    return Range(v, v)


_CAMELOT_RE = re.compile(r"^(1[0-2]|[1-9])([ab])$")
_KEYNAME_RE = re.compile(r"^([a-g])([#b]?)[ _-]?(m|min|minor|maj|major)?$")
_FLATS = {"db": "c#", "d#": "eb", "gb": "f#", "g#": "ab", "a#": "bb", "cb": "b", "e#": "f",
          "b#": "c", "fb": "e"}


def _key_code(s: str, pos: int, text: str) -> str:
    """A ``key:`` value as a Camelot code (``8A``), or ``"compatible"``."""
    from soundalike.audio.attributes import PITCH_CLASSES, camelot

    v = s.strip().lower()
    if v == "compatible":
        return v
    m = _CAMELOT_RE.match(v)
    if m:
        return f"{int(m.group(1))}{m.group(2).upper()}"
    m = _KEYNAME_RE.match(v)
    if m:
        note = m.group(1) + m.group(2)
        note = _FLATS.get(note, note)
        names = [p.lower() for p in PITCH_CLASSES]
        if note in names:
            minor = (m.group(3) or "") in ("m", "min", "minor")
            return camelot(names.index(note), "minor" if minor else "major")
    raise QueryError(f"position {pos + 1}: key needs a Camelot code (1A..12B), a key name "
                     f"(am, c#, ebm) or 'compatible', got {s!r} in filter {text!r}")


def _attribute_range(s: str, pos: int, field: str, text: str) -> Range:
    if field == "energy" and s.strip().lower() in ENERGY_WORDS:
        return Range(*ENERGY_WORDS[s.strip().lower()])
    return _range(s, pos, field, text)


def parse(text: str | None) -> Query:
    """Parse a filter expression into a :class:`Query`.

    Parameters
    ----------
    text : the filter, e.g. ``'genre:rock|pop -mood:sad year:1990..1999'``;
        ``None`` or blank gives an empty query that matches every track

    Raises
    ------
    QueryError
        Unterminated quote, empty value, bad number or range, misplaced ``|`` or ``-``;
        the message names the 1-based character position; more than :data:`MAX_TERMS`
        terms or :data:`MAX_VALUES` alternatives in a term.
    """
    text = text or ""
    terms: list[Term] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        start = i
        negated = False
        if text[i] == "-":
            negated = True
            i += 1
            if i >= n or text[i].isspace():
                raise QueryError(f"position {start + 1}: '-' must be followed by a term in filter {text!r}")
        if text[i] == "|":
            raise QueryError(f"position {i + 1}: '|' needs a value before it in filter {text!r}")
        field: str | None = None
        m = _FIELD_RE.match(text.lower(), i)
        if m and m.end() < n and text[m.end()] == ":":
            field = m.group(0)
            i = m.end() + 1
            if i >= n or text[i].isspace():
                raise QueryError(f"position {i}: '{field}:' needs a value in filter {text!r}")
        raw: list[tuple[str, int]] = []
        while True:
            vpos = i
            value, i = _read_value(text, i)
            if value == "" and not (vpos < n and text[vpos] == '"'):
                raise QueryError(f"position {vpos + 1}: empty value in filter {text!r}")
            raw.append((value, vpos))
            if len(raw) > MAX_VALUES:
                raise QueryError(f"position {start + 1}: a term may join at most {MAX_VALUES} values "
                                 f"with '|'; split the filter or use a range")
            if i < n and text[i] == "|":
                i += 1
                if i >= n or text[i].isspace():
                    raise QueryError(f"position {i}: '|' needs a value after it in filter {text!r}")
                continue
            break
        if i < n and not text[i].isspace():
            raise QueryError(f"position {i + 1}: expected a space after the term in filter {text!r}")
        if len(terms) >= MAX_TERMS:
            raise QueryError(f"position {start + 1}: a filter may have at most {MAX_TERMS} terms")
        if field in NUMERIC_FIELDS:
            terms.append(Term("numeric", field, tuple(_range(v, p, field, text) for v, p in raw),
                              negated, start))
        elif field in ATTRIBUTE_FIELDS:
            terms.append(Term("attribute", field,
                              tuple(_attribute_range(v, p, field, text) for v, p in raw), negated, start))
        elif field == "key":
            terms.append(Term("key", field, tuple(dict.fromkeys(_key_code(v, p, text) for v, p in raw)),
                              negated, start))
        elif field == "vocals" and all(v.strip().lower() in ("yes", "no") for v, _ in raw):
            terms.append(Term("vocals", field, tuple(v.strip().lower() for v, _ in raw), negated, start))
        else:
            values = tuple(v.strip().lower() for v, _ in raw)
            if any(v == "" for v in values):
                raise QueryError(f"position {start + 1}: empty value in filter {text!r}")
            kind: TermKind = "text" if field in TEXT_FIELDS else ("tag" if field else "any")
            terms.append(Term(kind, field, values, negated, start))
    return Query(tuple(terms), text)


# --------------------------------------------------------------------------- compiling


def _placeholders(k: int) -> str:
    return ",".join("?" * k)


def _range_sql(col: str, ranges) -> tuple[str, list[object]]:
    parts, params = [], []
    for r in ranges:
        assert isinstance(r, Range)
        if r.lo is not None and r.hi is not None:
            parts.append(f"({col} BETWEEN ? AND ?)")
            params += [r.lo, r.hi]
        elif r.lo is not None:
            parts.append(f"({col} >= ?)")
            params.append(r.lo)
        else:
            parts.append(f"({col} <= ?)")
            params.append(r.hi)
    return "(" + " OR ".join(parts) + ")", params


def _attr_in(cond: str) -> str:
    return f"t.id IN (SELECT a.track_id FROM track_attributes a WHERE {cond})"


def _term_sql(term: Term, sources: tuple[str, ...], d: Dialect,
              reference: dict | None = None) -> tuple[str, list[object]]:
    """SQL boolean expression over ``tracks`` (alias ``t``) for one positive term."""
    src = _placeholders(len(sources))
    if term.kind == "attribute":
        cond, params = _range_sql(f"a.{ATTRIBUTE_FIELDS[term.field or '']}", term.values)
        return _attr_in(cond), params
    if term.kind == "vocals":
        parts = ["a.vocals >= ?" if v == "yes" else "a.vocals < ?" for v in term.values]
        return _attr_in("(" + " OR ".join(parts) + ")"), [VOCALS_THRESHOLD] * len(parts)
    if term.kind == "key":
        from soundalike.audio.attributes import camelot_neighbours

        codes: list[str] = []
        for v in term.values:
            if v == "compatible":
                code = (reference or {}).get("camelot")
                if reference is None:
                    raise QueryError(f"position {term.pos + 1}: key:compatible is relative to a query "
                                     f"track; use it with `similar` or `playlist`")
                if not code:
                    raise QueryError(f"position {term.pos + 1}: key:compatible: the query track has no "
                                     f"key yet (run `soundalike ingest DIR --refresh attributes`)")
                codes += camelot_neighbours(code)
            else:
                codes.append(str(v))
        codes = list(dict.fromkeys(codes))
        return _attr_in(f"a.camelot IN ({_placeholders(len(codes))})"), codes
    if term.kind == "tag":
        vals = [str(v) for v in term.values]
        sql = (f"t.id IN (SELECT g.track_id FROM tags g WHERE g.category = ? "
               f"AND g.tag IN ({_placeholders(len(vals))}) AND g.source IN ({src}))")
        return sql, [term.field, *vals, *sources]
    if term.kind == "numeric":
        col = f"t.{NUMERIC_FIELDS[term.field or '']}"
        if term.field == "duration":
            # The decoded length where the attributes have it (headers guess, e.g. VBR mp3).
            col = (f"coalesce((SELECT a.duration_s FROM track_attributes a WHERE a.track_id = t.id), "
                   f"{col})")
        return _range_sql(col, term.values)
    if term.kind == "text":
        parts, params = [], []
        for v in term.values:
            sql_v, p_v = _text_ids((term.field or "",), str(v), d)
            parts.append(sql_v)
            params += p_v
        return f"t.id IN ({' UNION '.join(parts)})", params
    # bare word: any tag equal to it, or a substring of title / artist / album / file name
    vals = [str(v) for v in term.values]
    parts = [f"SELECT g.track_id FROM tags g WHERE g.tag IN ({_placeholders(len(vals))}) "
             f"AND g.source IN ({src})"]
    params: list[object] = [*vals, *sources]
    for v in vals:
        sql_v, p_v = _text_ids(tuple(TEXT_FIELDS), v, d)
        parts.append(sql_v)
        params += p_v
    return f"t.id IN ({' UNION '.join(parts)})", params


#: Shortest value the trigram text index can look up; shorter ones scan the table.
TRIGRAM = 3


def _text_ids(fields: tuple[str, ...], value: str, d: Dialect) -> tuple[str, list[object]]:
    """A ``SELECT`` of the ids of tracks (any status) whose ``fields`` contain ``value``.

    Through the text index of schema migration 8 where it can help (values of
    :data:`TRIGRAM` or more characters): SQLite's FTS5 trigram table gives candidates and
    the exact test below keeps only true substrings (FTS folds case more widely than
    SQLite's ``lower``, so it may offer more, never fewer); on PostgreSQL ``LIKE`` over the
    indexed expressions is itself exact.  Either way the rows are those of the plain
    substring test :func:`_contains`.
    """
    exact_parts, params = [], []
    for f in fields:
        sql_f, p_f = _contains(TEXT_FIELDS[f], value, d, alias="y")
        exact_parts.append(sql_f)
        params += p_f
    exact = " OR ".join(exact_parts)
    if len(value) < TRIGRAM:
        return f"SELECT y.id FROM tracks y WHERE {exact}", params
    if d.name == "sqlite":
        cols = " ".join(fields)
        phrase = '"' + value.replace('"', '""') + '"'
        match = phrase if len(fields) == len(TEXT_FIELDS) else f"{{{cols}}} : {phrase}"
        return (f"SELECT y.id FROM tracks y WHERE y.id IN (SELECT rowid FROM track_text WHERE "
                f"track_text MATCH ?) AND ({exact})", [match, *params])
    pattern = "%" + value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    # one SELECT per field, UNIONed: each can use its own index (an OR of four made the
    # planner scan); the file name's regexp only for paths that contain the value at all
    parts, params = [], []
    for f in fields:
        cond = f"{_PG_TEXT_INDEXED[f]} LIKE ?"
        if f == "file":
            cond = f"lower(y.path) LIKE ? AND {cond}"
            params.append(pattern)
        parts.append(f"SELECT y.id FROM tracks y WHERE {cond}")
        params.append(pattern)
    return " UNION ".join(parts), params


#: The expressions PostgreSQL's trigram indexes cover (schema migration 8), per text field.
_PG_TEXT_INDEXED = {"title": "lower(coalesce(y.title, ''))", "artist": "lower(coalesce(y.artist, ''))",
                    "album": "lower(coalesce(y.album, ''))", "file": "lower(regexp_replace(y.path, '^.*/', ''))"}


def _contains(col: str, value: str, d: Dialect, *, alias: str = "t") -> tuple[str, list[object]]:
    """``value`` in a ``TEXT_FIELDS`` column; for ``path`` in the file's name, not its folders
    (``music`` must not match every file under ``~/music``).  The cheap test on the whole
    path runs first, so the file-name expression is computed only for rows that can match."""
    if col == "path":
        p = f"{alias}.path"
        return f"({d.contains(p)} AND {d.contains(d.file_name(p))})", [value, value]
    return d.contains(f"{alias}.{col}"), [value]


def compile_sql(query: Query | str | None, *, include_suggested: bool = False,
                status: str | None = "ok", dialect: Dialect = SQLITE,
                reference: dict | None = None) -> tuple[str, list[object]]:
    """Compile a filter into a parameterised ``WHERE`` clause over ``tracks AS t``.

    Parameters
    ----------
    query : parsed :class:`Query` or filter text
    include_suggested : let tag terms match ``source='suggested'`` tags as well
    status : keep only tracks with this status (``None``: any)
    dialect : the backend's SQL spellings (substring test, boolean literals)
    reference : the query track's attributes (``Catalog.track_attributes``), for terms
        relative to it (``key:compatible``)

    Returns
    -------
    (sql, params)
        ``sql`` is a boolean expression (the dialect's true when nothing restricts)
        in which every value is a ``?``; ``params`` holds the values in order.
    """
    q = query if isinstance(query, Query) else parse(query)
    sources = BASE_SOURCES + ((SUGGESTED,) if include_suggested else ())
    clauses: list[str] = []
    params: list[object] = []
    if status is not None:
        clauses.append("t.status = ?")
        params.append(status)
    for term in q.terms:
        sql, p = _term_sql(term, sources, dialect, reference)
        # NOT over a NULL comparison is NULL: coalesce so that a negated term keeps
        # tracks that have no value for the field.
        clauses.append(f"NOT coalesce({sql}, {dialect.false})" if term.negated else sql)
        params += p
    return (" AND ".join(clauses) if clauses else dialect.true), params


def with_text(where: Query | str | None, text: str | None) -> Query:
    """``where`` plus free ``text`` matched like a bare quoted phrase (title/artist/album/tag)."""
    q = where if isinstance(where, Query) else parse(where)
    if text and text.strip():
        q = Query(q.terms + (Term("any", None, (text.strip().lower(),), False, len(q.text)),), q.text)
    return q
