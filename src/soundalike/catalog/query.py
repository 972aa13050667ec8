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
``piano``                                   tagged ``piano`` in any category, or with
                                            ``piano`` in title, artist or album
``"night train"``                           the same for a quoted phrase
``-noise``                                  negates a bare word as well
==========================================  ==============================================

Numeric fields: ``year``, ``duration`` (seconds), ``sr`` (Hz), ``channels``, ``id``.
Text fields: ``title``, ``artist``, ``album``.  Any other ``field:`` is a tag category
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
#: Text fields and the ``tracks`` column each one searches (substring, case-insensitive).
TEXT_FIELDS: dict[str, str] = {"title": "title", "artist": "artist", "album": "album"}
#: Tag sources that always match; ``suggested`` is added on request.
BASE_SOURCES: tuple[str, ...] = ("file", "user", "model")
SUGGESTED = "suggested"

TermKind = Literal["tag", "numeric", "text", "any"]

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
    kind : ``"tag"`` (category:value), ``"numeric"``, ``"text"`` (title/artist/album)
        or ``"any"`` (bare word)
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
        the message names the 1-based character position.
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
            if i < n and text[i] == "|":
                i += 1
                if i >= n or text[i].isspace():
                    raise QueryError(f"position {i}: '|' needs a value after it in filter {text!r}")
                continue
            break
        if i < n and not text[i].isspace():
            raise QueryError(f"position {i + 1}: expected a space after the term in filter {text!r}")
        if field in NUMERIC_FIELDS:
            terms.append(Term("numeric", field, tuple(_range(v, p, field, text) for v, p in raw),
                              negated, start))
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


def _term_sql(term: Term, sources: tuple[str, ...], d: Dialect) -> tuple[str, list[object]]:
    """SQL boolean expression over ``tracks`` (alias ``t``) for one positive term."""
    src = _placeholders(len(sources))
    if term.kind == "tag":
        vals = [str(v) for v in term.values]
        sql = (f"t.id IN (SELECT g.track_id FROM tags g WHERE g.category = ? "
               f"AND g.tag IN ({_placeholders(len(vals))}) AND g.source IN ({src}))")
        return sql, [term.field, *vals, *sources]
    if term.kind == "numeric":
        col = NUMERIC_FIELDS[term.field or ""]
        parts, params = [], []
        for r in term.values:
            assert isinstance(r, Range)
            if r.lo is not None and r.hi is not None:
                parts.append(f"(t.{col} BETWEEN ? AND ?)")
                params += [r.lo, r.hi]
            elif r.lo is not None:
                parts.append(f"(t.{col} >= ?)")
                params.append(r.lo)
            else:
                parts.append(f"(t.{col} <= ?)")
                params.append(r.hi)
        return "(" + " OR ".join(parts) + ")", params
    if term.kind == "text":
        col = TEXT_FIELDS[term.field or ""]
        parts = [d.contains(f"t.{col}") for _ in term.values]
        return "(" + " OR ".join(parts) + ")", [str(v) for v in term.values]
    # bare word: any tag equal to it, or a substring of title / artist / album
    vals = [str(v) for v in term.values]
    tag_sql = (f"t.id IN (SELECT g.track_id FROM tags g WHERE g.tag IN ({_placeholders(len(vals))}) "
               f"AND g.source IN ({src}))")
    params: list[object] = [*vals, *sources]
    parts = [tag_sql]
    for v in vals:
        for col in TEXT_FIELDS.values():
            parts.append(d.contains(f"t.{col}"))
            params.append(v)
    return "(" + " OR ".join(parts) + ")", params


def compile_sql(query: Query | str | None, *, include_suggested: bool = False,
                status: str | None = "ok", dialect: Dialect = SQLITE) -> tuple[str, list[object]]:
    """Compile a filter into a parameterised ``WHERE`` clause over ``tracks AS t``.

    Parameters
    ----------
    query : parsed :class:`Query` or filter text
    include_suggested : let tag terms match ``source='suggested'`` tags as well
    status : keep only tracks with this status (``None``: any)
    dialect : the backend's SQL spellings (substring test, boolean literals)

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
        sql, p = _term_sql(term, sources, dialect)
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
