// soundalike web page: plain JS, no dependencies, talks to /api only.
// Works under a strict Content-Security-Policy: no inline scripts or styles, no eval;
// positions are set through the CSSOM (element.style), which CSP allows.
"use strict";

const $ = (sel) => document.querySelector(sel);
const PAGE = 50;          // rows per page of the track list
const SIMILAR_K = 50;     // rows in a "similar" list
const FACETS_SHOWN = 8;   // tags shown per category before "more"
const CATEGORY_ORDER = ["genre", "instrument", "mood", "vocals"];
const NUMERIC_TERMS = ["duration", "bpm"];

// The whole state of the page; the URL holds all of it (see toURL / fromURL).
const state = {
  q: "", where: "", sort: "relevance", offset: 0, sugg: false,
  view: "tracks",           // tracks | similar | favourites | favsimilar | playlists | playlist | upload
  seed: null,               // track id for view=similar
  playlist: null,           // playlist id for view=playlist
};
const ui = {
  rows: [],                 // tracks shown in the list, in order
  total: 0,
  index: -1,                // selected row
  current: null,            // the track in the player
  favs: new Set(),          // ids of favourite tracks
  seq: 0,                   // sequence number of the latest load (older answers are dropped)
  peaks: null,              // {min, max, duration_s} of the current track
  ranges: null,             // {duration: [lo, hi], bpm: [lo, hi]} of the whole catalog
  seedTrack: null,
  uploadName: "",
  uploadHits: null,
  playlists: [],
  pendingAdd: null,
};

// ------------------------------------------------------------------ small helpers

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function fmtTime(s) {
  if (s == null || !isFinite(s)) return "";
  const t = Math.max(0, Math.round(s));  // round first: 119.88 s is 2:00, not 1:60
  const m = Math.floor(t / 60), r = t % 60;
  return `${m}:${String(r).padStart(2, "0")}`;
}

function csrfToken() {
  const m = document.cookie.match(/(?:^|;\s*)soundalike_csrf=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : "";
}

async function api(url, options = {}) {
  const method = (options.method || "GET").toUpperCase();
  if (method !== "GET" && method !== "HEAD") {
    options.headers = Object.assign({ "X-CSRF-Token": csrfToken() }, options.headers || {});
  }
  const r = await fetch(url, Object.assign({ credentials: "same-origin" }, options));
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) {
    const err = new Error((body && body.detail) || `${r.status} ${r.statusText}`);
    err.status = r.status;
    throw err;
  }
  return body;
}

function setStatus(text, isError = false) {
  const s = $("#status");
  s.textContent = text || "";
  s.classList.toggle("error", !!isError);
}

// ------------------------------------------------------------------ the filter expression

// Terms of the filter, split on spaces outside quotes (the grammar of catalog/query.py).
function terms(where) { return (where || "").match(/-?[^\s"]*"[^"]*"|\S+/g) || []; }

function quoteValue(v) { return /[\s|"]/.test(v) ? `"${v.replace(/"/g, "")}"` : v; }

function unquote(v) { return v.replace(/^"(.*)"$/, "$1"); }

// Values of the positive term on `field` (e.g. genre:rock|pop -> ["rock", "pop"]).
function termValues(where, field) {
  for (const t of terms(where)) {
    if (t.startsWith("-")) continue;
    const i = t.indexOf(":");
    if (i > 0 && t.slice(0, i).toLowerCase() === field) {
      return (t.slice(i + 1).match(/"[^"]*"|[^|]+/g) || []).map(unquote);
    }
  }
  return [];
}

// The filter with the positive `field:` term replaced by `values` (removed when empty).
function withTerm(where, field, values) {
  const out = [];
  let placed = false;
  const term = values.length ? `${field}:${values.map(quoteValue).join("|")}` : null;
  for (const t of terms(where)) {
    const i = t.indexOf(":");
    if (!t.startsWith("-") && i > 0 && t.slice(0, i).toLowerCase() === field) {
      if (term && !placed) out.push(term);
      placed = true;
    } else {
      out.push(t);
    }
  }
  if (term && !placed) out.push(term);
  return out.join(" ");
}

function rangeOf(where, field) {
  const v = termValues(where, field);
  if (v.length !== 1) return [null, null];
  const m = v[0].match(/^(\d*\.?\d*)\.\.(\d*\.?\d*)$/);
  if (!m) return [null, null];
  return [m[1] === "" ? null : Number(m[1]), m[2] === "" ? null : Number(m[2])];
}

// ------------------------------------------------------------------ URL <-> state

function toURL() {
  const p = new URLSearchParams();
  if (state.q) p.set("q", state.q);
  if (state.where) p.set("where", state.where);
  if (state.sort !== "relevance") p.set("sort", state.sort);
  if (state.offset) p.set("offset", state.offset);
  if (state.sugg) p.set("suggested", "1");
  if (state.view !== "tracks" && state.view !== "upload") p.set("view", state.view);
  if (state.view === "similar" && state.seed != null) p.set("seed", state.seed);
  if (state.view === "playlist" && state.playlist != null) p.set("playlist", state.playlist);
  const s = p.toString();
  return location.pathname + (s ? "?" + s : "");
}

function fromURL() {
  const p = new URLSearchParams(location.search);
  state.q = p.get("q") || "";
  state.where = p.get("where") || "";
  state.sort = p.get("sort") || "relevance";
  state.offset = Math.max(0, parseInt(p.get("offset") || "0", 10) || 0);
  state.sugg = p.get("suggested") === "1";
  state.view = p.get("view") || "tracks";
  state.seed = p.has("seed") ? parseInt(p.get("seed"), 10) : null;
  state.playlist = p.has("playlist") ? parseInt(p.get("playlist"), 10) : null;
  if (state.view === "similar" && !(state.seed >= 0)) state.view = "tracks";
  if (state.view === "playlist" && !(state.playlist >= 0)) state.view = "playlists";
}

// Change the state, record it in the history (so the back button undoes it) and reload.
function go(changes, { replace = false } = {}) {
  Object.assign(state, changes);
  const url = toURL();
  if (url !== location.pathname + location.search) {
    // depth counts the page's own entries, so "Back to results" never leaves the site
    const depth = (history.state && history.state.depth) || 0;
    if (replace) history.replaceState({ depth }, "", url); else history.pushState({ depth: depth + 1 }, "", url);
  }
  return load();
}

function filterParams(extra = {}) {
  const p = new URLSearchParams();
  if (state.where) p.set("where", state.where);
  if (state.q) p.set("q", state.q);
  if (state.sugg) p.set("include_suggested", "true");
  for (const [k, v] of Object.entries(extra)) if (v !== null && v !== undefined) p.set(k, v);
  return p;
}

// ------------------------------------------------------------------ loading

async function load() {
  const seq = ++ui.seq;
  syncControls();
  setStatus("");
  $("#list").setAttribute("aria-busy", "true");
  try {
    const facetsJob = loadFacets(seq);
    let rows = [], total = 0, title = "All tracks";
    $("#seed").hidden = true;
    $("#playlist-tools").hidden = true;
    if (state.view === "similar") {
      const [res, seedTrack] = await Promise.all([
        api("/api/similar?" + filterParams({ id: state.seed, k: SIMILAR_K })),
        api(`/api/tracks/${state.seed}`),
      ]);
      if (seq !== ui.seq) return;
      rows = res.hits;
      total = rows.length;
      title = "Similar tracks";
      showSeed(seedTrack.display_title || seedTrack.name, seedTrack);
    } else if (state.view === "upload" && ui.uploadHits) {
      rows = ui.uploadHits;
      total = rows.length;
      title = "Similar to your clip";
      showSeed(ui.uploadName, null);
    } else if (state.view === "favourites" || state.view === "favsimilar") {
      const fav = await api("/api/favourites");
      if (seq !== ui.seq) return;
      ui.favs = new Set(fav.tracks.map((t) => t.id));
      if (state.view === "favsimilar") {
        const res = await api("/api/similar/favourites?" + filterParams({ k: SIMILAR_K }));
        if (seq !== ui.seq) return;
        rows = res.hits;
        title = "Similar to my favourites";
      } else {
        rows = fav.tracks;
        title = "Favourites";
      }
      total = rows.length;
      showCollectionTools("favourites", rows.length);
    } else if (state.view === "playlists") {
      const res = await api("/api/playlists");
      if (seq !== ui.seq) return;
      ui.playlists = res.playlists;
      renderPlaylists(res.playlists);
      $("#view-title").textContent = "Playlists";
      $("#count").textContent = `${res.playlists.length} playlist${res.playlists.length === 1 ? "" : "s"}`;
      $("#page").textContent = "";
      $("#prev").hidden = $("#next").hidden = true;
      $("#list").removeAttribute("aria-busy");
      await facetsJob;
      return;
    } else if (state.view === "playlist") {
      const res = await api(`/api/playlists/${state.playlist}`);
      if (seq !== ui.seq) return;
      rows = res.tracks;
      total = rows.length;
      title = `Playlist: ${res.name}`;
      showCollectionTools("playlist", rows.length, res);
    } else {
      state.view = "tracks";
      const page = await api("/api/tracks?" + filterParams({ offset: state.offset, limit: PAGE, sort: state.sort }));
      if (seq !== ui.seq) return;
      rows = page.tracks;
      total = page.total;
      title = state.q ? `Results for “${state.q}”` : "All tracks";
      setStatus((page.notes || []).join("; "));  // e.g. "no track has a tag in category 'genre' ..."
    }
    ui.rows = rows;
    ui.total = total;
    $("#view-title").textContent = title;
    renderList();
    renderPager();
    await facetsJob;
  } catch (e) {
    if (seq !== ui.seq) return;
    ui.rows = [];
    renderList();
    setStatus(e.message, true);
  } finally {
    if (seq === ui.seq) $("#list").removeAttribute("aria-busy");
  }
}

// Facet counts always over the active filter; a category with a chosen value is counted
// without its own term, so its other values stay visible and can be added (OR).
async function loadFacets(seq) {
  const res = await api("/api/facets?" + filterParams({ per_category: 40 }));
  if (seq !== ui.seq) return;
  const facets = res.facets || {};
  const chosen = Object.keys(facets).filter((c) => termValues(state.where, c).length);
  for (const c of Object.keys(res.chosen_categories || {})) if (!chosen.includes(c)) chosen.push(c);
  await Promise.all(chosen.map(async (c) => {
    const p = filterParams({ per_category: 40, categories: c });
    const w = withTerm(state.where, c, []);
    if (w) p.set("where", w); else p.delete("where");
    const r = await api("/api/facets?" + p);
    if (r.facets && r.facets[c]) facets[c] = r.facets[c];
  }));
  if (seq !== ui.seq) return;
  if (res.ranges) ui.ranges = res.ranges;
  renderRanges(res.ranges || {}, res.keys || null);
  renderFacets(facets);
}

// ------------------------------------------------------------------ filters panel

function renderFacets(facets) {
  const box = $("#facets");
  box.replaceChildren();
  const cats = Object.keys(facets).filter((c) => c !== "key" && facets[c].length);
  cats.sort((a, b) => {
    const ia = CATEGORY_ORDER.indexOf(a), ib = CATEGORY_ORDER.indexOf(b);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
  });
  for (const category of cats) {
    const chosen = new Set(termValues(state.where, category));
    const ul = el("ul", { class: "facet-list" });
    facets[category].forEach(({ tag, count }, i) => {
      const on = chosen.has(tag);
      const b = el("button", { type: "button", class: "facet" + (on ? " on" : ""), "aria-pressed": on ? "true" : "false",
                               "data-term": `${category}:${quoteValue(tag)}`,
                               onclick: () => toggleFacet(category, tag) },
                   el("span", { class: "t" }, tag), el("span", { class: "n" }, count));
      ul.append(el("li", { class: i >= FACETS_SHOWN && !on ? "extra" : null }, b));
    });
    const details = el("details", { class: "facet-group", open: true },
                       el("summary", {}, el("span", { class: "cat" }, category),
                          chosen.size ? el("span", { class: "n" }, ` · ${chosen.size} chosen`) : null), ul);
    if (facets[category].length > FACETS_SHOWN) {
      const more = el("button", { type: "button", class: "linkish more", "aria-expanded": "false" },
                      `more ${category}`);
      more.addEventListener("click", () => {
        const open = ul.classList.toggle("show-all");
        more.setAttribute("aria-expanded", open ? "true" : "false");
        more.textContent = open ? `fewer ${category}` : `more ${category}`;
      });
      details.append(more);
    }
    box.append(details);
  }
  // collections (favourites, playlists) are not filtered: no count of terms that do not apply
  const n = filterApplies() ? terms(state.where).length : 0;
  $("#filter-n").textContent = n ? `(${n})` : "";
}

function filterApplies() { return !["favourites", "playlists", "playlist"].includes(state.view); }

function toggleFacet(category, tag) {
  const vals = termValues(state.where, category);
  const i = vals.indexOf(tag);
  if (i >= 0) vals.splice(i, 1); else vals.push(tag);
  go({ where: withTerm(state.where, category, vals), offset: 0, view: listView() });
}

// The view a filter change shows: a similar list stays (re-run within the filter).
function listView() {
  return ["similar", "favsimilar"].includes(state.view) ? state.view : "tracks";
}

function renderRanges(ranges, keys) {
  setupRange("duration", ranges.duration || (ui.ranges && ui.ranges.duration) || [0, 600], fmtTime, 1);
  const bpm = ranges.bpm;
  $("#range-bpm").hidden = !bpm;
  $('#sort option[value="bpm"]').hidden = !bpm;
  $('#sort option[value="bpm"]').disabled = !bpm;
  if (bpm) setupRange("bpm", bpm, (v) => String(Math.round(v)), 1);
  const keyBox = $("#key-box");
  keyBox.hidden = !(keys && keys.length);
  if (keys && keys.length) {
    const sel = $("#key");
    const chosen = termValues(state.where, "key");
    sel.replaceChildren(el("option", { value: "" }, "any key"),
      ...keys.map((k) => el("option", { value: k.key }, k.label ? `${k.key} (${k.label})` : k.key)));
    sel.value = chosen.length === 1 ? chosen[0] : "";
  }
}

function setupRange(field, [lo, hi], fmt, step) {
  lo = Math.floor(lo); hi = Math.ceil(hi);
  if (!(hi > lo)) hi = lo + 1;
  const a = $(`#${field}-min`), b = $(`#${field}-max`);
  for (const x of [a, b]) { x.min = lo; x.max = hi; x.step = step; }
  const [wlo, whi] = rangeOf(state.where, field);
  a.value = wlo == null ? lo : wlo;
  b.value = whi == null ? hi : whi;
  const show = () => {
    const active = wlo != null || whi != null;
    $(`#${field}-out`).textContent = `${fmt(Number(a.value))} – ${fmt(Number(b.value))}` + (active ? "" : " (any)");
    a.setAttribute("aria-valuetext", fmt(Number(a.value)));
    b.setAttribute("aria-valuetext", fmt(Number(b.value)));
  };
  show();
  a.oninput = b.oninput = () => {
    if (Number(a.value) > Number(b.value)) (document.activeElement === a ? b : a).value = document.activeElement === a ? a.value : b.value;
    $(`#${field}-out`).textContent = `${fmt(Number(a.value))} – ${fmt(Number(b.value))}`;
  };
  a.onchange = b.onchange = () => {
    const x = Number(a.value), y = Number(b.value);
    const term = x <= lo && y >= hi ? [] : [`${x <= lo ? "" : x}..${y >= hi ? "" : y}`];
    go({ where: withTerm(state.where, field, term), offset: 0, view: listView() });
  };
}

// The active filter as removable chips above the list (on a phone the panel is hidden).
function renderActive() {
  const box = $("#active");
  box.replaceChildren();
  const ts = terms(state.where);
  if (state.q) ts.unshift(`"${state.q}"`);
  for (const t of ts) {
    const isQ = state.q && t === `"${state.q}"`;
    box.append(el("button", { type: "button", class: "term", "aria-label": `remove filter ${t}`,
                              onclick: () => isQ ? go({ q: "", offset: 0 })
                                : go({ where: terms(state.where).filter((x) => x !== t).join(" "), offset: 0, view: listView() }) },
                  t, el("span", { "aria-hidden": "true" }, " ×")));
  }
  // collections are not filtered: their view shows no filter chips
  box.hidden = !ts.length || !filterApplies();
  const note = $("#filters-note");
  if (note.hidden && !filterApplies()) $("#filters").scrollTop = 0;  // the note is at the top
  note.hidden = filterApplies();
  const n = filterApplies() ? terms(state.where).length : 0;
  $("#filter-n").textContent = n ? `(${n})` : "";
}

function syncControls() {
  renderActive();
  $("#q").value = state.q;
  $("#where").value = state.where;
  $("#sort").value = state.sort;
  $("#include-suggested").checked = state.sugg;
  $("#sort").disabled = state.view !== "tracks";
  for (const [id, v] of [["#view-favourites", "favourites"], ["#view-playlists", "playlists"]]) {
    const on = state.view === v || (v === "favourites" && state.view === "favsimilar") || (v === "playlists" && state.view === "playlist");
    $(id).setAttribute("aria-current", on ? "page" : "false");
  }
}

// ------------------------------------------------------------------ the list

function tagChips(tags, max = 4) {
  const span = el("span", { class: "chips" });
  // one chip per category:tag (a file tag and a model tag saying "jazz" are one fact); the
  // first source shown is the strongest (tags arrive most confident first)
  const seen = new Set();
  const uniq = (tags || []).filter((t) => { const k = `${t.category}:${t.tag}`; return !seen.has(k) && seen.add(k); });
  for (const t of uniq.slice(0, max)) {
    span.append(el("span", { class: "chip " + (t.source || "shared"), title: `${t.category}: ${t.tag} (${t.source || "shared with the seed"})` },
                   t.tag));
  }
  return span;
}

function trackKey(t) { return t.key || t.camelot || ""; }  // Camelot notation (8A = A minor)

function trackTitle(t) { return t.display_title || t.name || t.file || `track ${t.id}`; }

function trackSub(t) {
  const bits = [];
  if (t.artist) bits.push(t.artist);
  if (t.album) bits.push(t.album);
  if (t.file && !t.title_is_file) bits.push(t.file);  // else the title already is the file's name
  return bits.join(" · ");
}

function iconButton(label, text, onclick, cls = "", pressed = null) {
  return el("button", { type: "button", class: "icon " + cls, "aria-label": label, title: label,
                        "aria-pressed": pressed === null ? null : (pressed ? "true" : "false"),
                        onclick: (ev) => { ev.stopPropagation(); onclick(ev); } }, text);
}

function renderList() {
  const list = $("#list");
  list.replaceChildren();
  $(".list-head").hidden = !ui.rows.length;
  if (!ui.rows.length) {
    const msg = state.view === "favourites" ? "No favourites yet: press ♡ on a track to keep it here."
      : state.view === "playlist" ? "This playlist is empty: use + on a track to add it."
      : state.view === "favsimilar" ? "Add favourites first; then this lists what sounds like them."
      : "No tracks match. Remove a filter or clear the search.";
    list.append(el("li", { class: "empty" }, msg));
  }
  ui.rows.forEach((t, i) => list.append(renderRow(t, i)));
  // BPM and key columns only where the catalog has them (older catalogs do not)
  const results = $("#results");
  results.classList.toggle("no-bpm", !ui.rows.some((t) => t.bpm || t.bpm_unsure));
  results.classList.toggle("no-key", !ui.rows.some((t) => trackKey(t)));
  ui.index = ui.current ? ui.rows.findIndex((t) => t.id === ui.current.id) : -1;
  markSelected(false);
  $("#count").textContent = state.view === "tracks"
    ? (ui.total ? `${ui.total} track${ui.total === 1 ? "" : "s"}` : "no tracks match")
    : `${ui.rows.length} track${ui.rows.length === 1 ? "" : "s"}`;
}

function renderRow(t, i) {
  const fav = ui.favs.has(t.id);
  const playing = ui.current && ui.current.id === t.id && !$("#audio").paused;
  const title = trackTitle(t);
  const score = t.score != null ? el("span", { class: "score", title: "similarity (cosine)" }, `${Math.round(t.score * 100)}% match`) : null;
  const actions = el("span", { class: "actions" },
    iconButton(fav ? `remove ${title} from favourites` : `add ${title} to favourites`, fav ? "♥" : "♡",
               () => toggleFavourite(t), "fav" + (fav ? " on" : ""), fav),
    el("button", { type: "button", class: "similar-btn", "aria-label": `similar to ${title}`, title: "similar tracks",
                   onclick: (ev) => { ev.stopPropagation(); openSimilar(t); } }, "Similar"),
    state.view === "playlist"
      ? iconButton(`remove ${title} from this playlist`, "✕", () => removeFromPlaylist(t), "remove")
      : iconButton(`add ${title} to a playlist`, "+", () => openAddDialog(t), "add"),
    el("a", { class: "icon dl", href: `/api/tracks/${t.id}/download`, "aria-label": `download ${title}`, title: "download",
              onclick: (ev) => ev.stopPropagation() }, "⬇"));
  const li = el("li", { class: "row", "data-id": t.id, tabindex: "-1", onclick: () => select(i, true) },
    iconButton(playing ? `pause ${title}` : `play ${title}`, playing ? "❚❚" : "▶", () => playRow(i), "play"),
    el("span", { class: "c-title" }, el("span", { class: "title" }, title), " ",
       el("span", { class: "sub" }, trackSub(t)), score),
    el("span", { class: "c-tags" }, tagChips(t.shared_tags && t.shared_tags.length ? t.shared_tags : t.tags)),
    el("span", { class: "c-num" }, fmtTime(t.duration_s)),
    el("span", { class: "c-num c-bpm", title: t.bpm_unsure ? "no steady beat: tempo unknown" : null },
       t.bpm ? Math.round(t.bpm) : t.bpm_unsure ? "?" : ""),
    el("span", { class: "c-key" }, trackKey(t)),
    actions);
  return li;
}

function renderPager() {
  const paged = state.view === "tracks";
  $("#prev").hidden = $("#next").hidden = !paged || ui.total <= PAGE;
  if (!paged || !ui.total) { $("#page").textContent = ""; return; }
  const last = Math.min(state.offset + PAGE, ui.total);
  $("#page").textContent = ui.total > PAGE ? `${state.offset + 1}–${last} of ${ui.total}` : "";
  $("#prev").disabled = state.offset === 0;
  $("#next").disabled = last >= ui.total;
}

function renderPlaylists(pls) {
  ui.rows = [];
  const list = $("#list");
  list.replaceChildren();
  $(".list-head").hidden = true;
  const form = el("form", { class: "new-pl" },
    el("label", { for: "pl-new-name" }, "New playlist"),
    el("input", { id: "pl-new-name", type: "text", maxlength: "100", placeholder: "name" }),
    el("button", { type: "submit" }, "Create"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const name = $("#pl-new-name").value.trim();
    if (!name) return;
    try {
      await api("/api/playlists", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name }) });
      load();
    } catch (e) { setStatus(e.message, true); }
  });
  list.append(el("li", { class: "empty" }, form));
  if (!pls.length) list.append(el("li", { class: "empty" }, "No playlists yet. Create one here, or use + on any track."));
  for (const p of pls) {
    list.append(el("li", { class: "row pl-row", "data-playlist": p.id },
      el("button", { type: "button", class: "linkish pl-open", onclick: () => go({ view: "playlist", playlist: p.id }) }, p.name),
      el("span", { class: "muted" }, `${p.n_tracks} track${p.n_tracks === 1 ? "" : "s"}`),
      el("a", { class: "btn", href: `/api/playlists/${p.id}/export.m3u8`, download: "" }, "M3U8"),
      el("a", { class: "btn", href: `/api/playlists/${p.id}/export.csv`, download: "" }, "CSV")));
  }
}

function showSeed(name, track) {
  ui.seedTrack = track;
  $("#seed").hidden = false;
  $("#seed-name").textContent = name;
  $("#seed-where").textContent = state.where ? `within ${state.where}` : "";
  const tools = $("#seed-tools");
  tools.replaceChildren();
  if (track) {
    tools.append(el("button", { type: "button", class: "icon play", id: "seed-play", "aria-label": `play ${name}`,
                                onclick: () => {
                                  const a = $("#audio");
                                  if (ui.current && ui.current.id === track.id && !a.paused) a.pause(); else playTrack(track, -1);
                                } }, "▶"),
                 el("span", { class: "muted" }, fmtTime(track.duration_s)), " ",
                 tagChips(track.tags, 5));
    updatePlayButtons();
  }
}

function showCollectionTools(kind, n, pl = null) {
  const box = $("#playlist-tools");
  box.hidden = false;
  box.replaceChildren();
  if (kind === "favourites") {
    box.append(
      el("button", { type: "button", class: state.view === "favourites" ? "on" : "", "aria-pressed": state.view === "favourites" ? "true" : "false",
                     onclick: () => go({ view: "favourites" }) }, "My favourites"),
      el("button", { type: "button", id: "fav-similar", class: state.view === "favsimilar" ? "on" : "", "aria-pressed": state.view === "favsimilar" ? "true" : "false",
                     onclick: () => go({ view: "favsimilar" }) }, "Similar to my favourites"),
      el("a", { class: "btn", id: "fav-m3u", href: "/api/favourites/export.m3u8", download: "" }, "Export M3U8"),
      el("a", { class: "btn", href: "/api/favourites/export.csv", download: "" }, "Export CSV"));
  } else {
    box.append(
      el("button", { type: "button", class: "back", onclick: () => go({ view: "playlists", playlist: null }) }, "← All playlists"),
      el("a", { class: "btn", id: "pl-m3u", href: `/api/playlists/${pl.id}/export.m3u8`, download: "" }, "Export M3U8"),
      el("a", { class: "btn", href: `/api/playlists/${pl.id}/export.csv`, download: "" }, "Export CSV"),
      el("button", { type: "button", class: "danger", onclick: async () => {
        if (!confirm(`Delete the playlist “${pl.name}”?`)) return;
        try { await api(`/api/playlists/${pl.id}`, { method: "DELETE" }); go({ view: "playlists", playlist: null }); }
        catch (e) { setStatus(e.message, true); }
      } }, "Delete playlist"));
  }
}

// ------------------------------------------------------------------ selection & playback

function rowEl(i) { return $("#list").children[i] && $("#list").children[i].classList.contains("row") ? $("#list").children[i] : null; }

// The list is one Tab stop (a roving tabindex): the selected row -- the first when none is --
// takes focus, and only its own buttons follow it in the Tab order; ↑/↓ move between rows.
function markSelected(focus) {
  const rows = [...$("#list").children];
  const active = ui.index >= 0 ? ui.index : 0;
  rows.forEach((li, i) => {
    const on = i === ui.index;
    li.classList.toggle("selected", on);
    if (on) li.setAttribute("aria-current", "true"); else li.removeAttribute("aria-current");
    if (!li.classList.contains("row")) return;
    li.tabIndex = i === active ? 0 : -1;
    for (const c of li.querySelectorAll("button, a[href], input")) c.tabIndex = i === active ? 0 : -1;
  });
  const row = rowEl(ui.index);
  if (row && focus) { row.focus({ preventScroll: true }); row.scrollIntoView({ block: "nearest" }); }
}

function select(i, play) {
  if (!ui.rows.length) return;
  i = Math.max(0, Math.min(i, ui.rows.length - 1));
  ui.index = i;
  markSelected(true);
  if (play) playTrack(ui.rows[i], i);
}

function playRow(i) {
  const t = ui.rows[i];
  const a = $("#audio");
  if (ui.current && ui.current.id === t.id) {
    if (a.paused) a.play().catch(() => {}); else a.pause();
    ui.index = i;
    markSelected(true);
    return;
  }
  select(i, true);
}

function playTrack(t, i) {
  const a = $("#audio");
  if (!ui.current || ui.current.id !== t.id) {
    ui.current = t;
    a.src = `/api/tracks/${t.id}/audio`;
    a.dataset.trackId = t.id;
    $("#pl-title").textContent = trackTitle(t);
    $("#pl-sub").textContent = [t.artist, fmtTime(t.duration_s), t.bpm ? `${Math.round(t.bpm)} BPM` : "", trackKey(t)].filter(Boolean).join(" · ");
    const dl = $("#pl-download");
    dl.hidden = false;
    dl.href = `/api/tracks/${t.id}/download`;
    updateFavButton();
    loadPeaks(t);
  }
  a.play().catch(() => {});
}

async function loadPeaks(t) {
  ui.peaks = null;
  drawWave();
  try {
    const p = await api(`/api/tracks/${t.id}/peaks`);
    if (ui.current && ui.current.id === t.id) { ui.peaks = p; drawWave(); }
  } catch (e) {
    /* no stored peaks (an old catalog): the bar still shows progress and seeks */
  }
}

function updatePlayButtons() {
  const a = $("#audio");
  const playing = !a.paused;
  const b = $("#pl-play");
  b.textContent = playing ? "❚❚" : "▶";
  b.setAttribute("aria-label", playing ? "pause" : "play");
  const seedBtn = $("#seed-play");
  if (seedBtn && ui.seedTrack) {
    const on = playing && ui.current && ui.current.id === ui.seedTrack.id;
    seedBtn.textContent = on ? "❚❚" : "▶";
    seedBtn.setAttribute("aria-label", `${on ? "pause" : "play"} ${trackTitle(ui.seedTrack)}`);
  }
  document.querySelectorAll("#list .row").forEach((li) => {
    const on = ui.current && String(ui.current.id) === li.dataset.id && playing;
    const btn = li.querySelector("button.play");
    if (!btn) return;
    li.classList.toggle("playing", !!on);
    btn.textContent = on ? "❚❚" : "▶";
    const t = ui.rows.find((r) => String(r.id) === li.dataset.id);
    if (t) btn.setAttribute("aria-label", `${on ? "pause" : "play"} ${trackTitle(t)}`);
  });
}

function step(delta) {
  if (!ui.rows.length) return;
  const start = ui.index < 0 ? (delta > 0 ? 0 : ui.rows.length - 1) : ui.index + delta;
  select(start, true);
}

// ------------------------------------------------------------------ waveform

function drawWave() {
  const c = $("#wave");
  const w = c.clientWidth, h = c.clientHeight;
  if (!w || !h) return;
  const dpr = window.devicePixelRatio || 1;
  if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
    c.width = Math.round(w * dpr); c.height = Math.round(h * dpr);
  }
  const g = c.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const a = $("#audio");
  const dur = a.duration && isFinite(a.duration) ? a.duration : (ui.current && ui.current.duration_s) || 0;
  const frac = dur ? Math.min(1, a.currentTime / dur) : 0;
  const css = getComputedStyle(c);
  const played = css.getPropertyValue("--wave-played").trim() || "#2456a6";
  const rest = css.getPropertyValue("--wave-rest").trim() || "#9aa3ad";
  const mid = h / 2;
  const p = ui.peaks;
  if (!p || !p.n) {
    g.fillStyle = rest; g.fillRect(0, mid - 1, w, 2);
    g.fillStyle = played; g.fillRect(0, mid - 1, w * frac, 2);
  } else {
    const bar = 2, gap = 1, cols = Math.floor(w / (bar + gap));
    for (let x = 0; x < cols; x++) {
      const i0 = Math.floor(x * p.n / cols), i1 = Math.max(i0 + 1, Math.floor((x + 1) * p.n / cols));
      let lo = 0, hi = 0;
      for (let i = i0; i < i1 && i < p.n; i++) { if (p.min[i] < lo) lo = p.min[i]; if (p.max[i] > hi) hi = p.max[i]; }
      const top = mid - (hi / 127) * (mid - 1), bot = mid - (lo / 127) * (mid - 1);
      g.fillStyle = (x + 0.5) / cols <= frac ? played : rest;
      g.fillRect(x * (bar + gap), top, bar, Math.max(1, bot - top));
    }
  }
  g.fillStyle = played;
  g.fillRect(Math.min(w - 2, w * frac), 0, 2, h);  // the playhead
  c.setAttribute("aria-valuemax", String(Math.round(dur)));
  c.setAttribute("aria-valuenow", String(Math.round(a.currentTime || 0)));
  c.setAttribute("aria-valuetext", `${fmtTime(a.currentTime)} of ${fmtTime(dur)}`);
  $("#pl-time").textContent = fmtTime(a.currentTime || 0);
  $("#pl-dur").textContent = fmtTime(dur);
}

function seekTo(frac) {
  const a = $("#audio");
  const dur = a.duration && isFinite(a.duration) ? a.duration : (ui.current && ui.current.duration_s) || 0;
  if (!dur || !ui.current) return;
  a.currentTime = Math.max(0, Math.min(dur - 0.05, frac * dur));
  drawWave();
}

// ------------------------------------------------------------------ similar, favourites, playlists

function openSimilar(t) {
  go({ view: "similar", seed: t.id }).then(() => {
    window.scrollTo({ top: 0 });
    $("#results").scrollTop = 0;
    if (!ui.current || ui.current.id !== t.id || $("#audio").paused) playTrack(ui.seedTrack || t, -1);
    $("#back").focus({ preventScroll: true });
  });
}

async function refreshFavourites() {
  try {
    const r = await api("/api/favourites/ids");
    ui.favs = new Set(r.ids);
  } catch (e) { /* an old server without favourites: hearts stay empty */ }
  $("#fav-count").textContent = ui.favs.size ? `(${ui.favs.size})` : "";
}

async function toggleFavourite(t) {
  const on = ui.favs.has(t.id);
  try {
    await api(`/api/favourites/${t.id}`, { method: on ? "DELETE" : "PUT" });
    if (on) ui.favs.delete(t.id); else ui.favs.add(t.id);
    $("#fav-count").textContent = ui.favs.size ? `(${ui.favs.size})` : "";
    if (state.view === "favourites") { load(); } else {
      const i = ui.rows.findIndex((r) => r.id === t.id);
      if (i >= 0) { const li = renderRow(ui.rows[i], i); $("#list").children[i].replaceWith(li); markSelected(false); }
    }
    updateFavButton();
    setStatus(on ? `Removed “${trackTitle(t)}” from favourites.` : `Added “${trackTitle(t)}” to favourites.`);
  } catch (e) { setStatus(e.message, true); }
}

function updateFavButton() {
  const b = $("#pl-fav");
  const on = ui.current && ui.favs.has(ui.current.id);
  b.textContent = on ? "♥" : "♡";
  b.setAttribute("aria-pressed", on ? "true" : "false");
  b.setAttribute("aria-label", on ? "remove from favourites" : "add to favourites");
  b.classList.toggle("on", !!on);
}

async function openAddDialog(t) {
  ui.pendingAdd = t;
  try { ui.playlists = (await api("/api/playlists")).playlists; } catch (e) { ui.playlists = []; }
  const box = $("#add-list");
  box.replaceChildren();
  ui.playlists.forEach((p, i) => box.append(el("label", { class: "radio" },
    el("input", { type: "radio", name: "pl", value: p.id, checked: i === 0 }), ` ${p.name} `, el("span", { class: "n" }, `(${p.n_tracks})`))));
  $("#add-title").textContent = `Add “${trackTitle(t)}” to a playlist`;
  $("#new-playlist").value = "";
  $("#add-dialog").showModal();
  (ui.playlists.length ? box.querySelector("input") : $("#new-playlist")).focus();
}

async function confirmAdd() {
  const t = ui.pendingAdd;
  const name = $("#new-playlist").value.trim();
  const picked = document.querySelector('#add-list input[name="pl"]:checked');
  try {
    let id = picked && !name ? Number(picked.value) : null, plName = picked ? picked.parentElement.textContent.trim() : "";
    if (name) {
      const r = await api("/api/playlists", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name }) });
      id = r.id; plName = r.name;
    }
    if (id == null) { setStatus("Choose a playlist or type a name for a new one.", true); return; }
    await api(`/api/playlists/${id}/tracks`, { method: "POST", headers: { "Content-Type": "application/json" },
                                               body: JSON.stringify({ track_ids: [t.id] }) });
    setStatus(`Added “${trackTitle(t)}” to ${name || plName.replace(/\s*\(\d+\)$/, "")}.`);
  } catch (e) { setStatus(e.message, true); }
}

async function removeFromPlaylist(t) {
  try {
    await api(`/api/playlists/${state.playlist}/tracks/${t.id}`, { method: "DELETE" });
    load();
  } catch (e) { setStatus(e.message, true); }
}

// ------------------------------------------------------------------ wiring

function isSmall() { return window.matchMedia("(max-width: 800px)").matches; }

function setFilters(open) {
  document.body.classList.toggle("filters-open", open);
  $("#filters-open").setAttribute("aria-expanded", open ? "true" : "false");
  if (open) $("#filters-close").focus(); else if (isSmall()) $("#filters-open").focus();
}

function wire() {
  const a = $("#audio");
  $("#search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    go({ q: $("#q").value.trim(), offset: 0, view: "tracks" });
  });
  $("#where-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    go({ where: $("#where").value.trim(), offset: 0, view: listView() });
    if (isSmall()) setFilters(false);
  });
  $("#include-suggested").addEventListener("change", (ev) => go({ sugg: ev.target.checked, offset: 0 }));
  $("#clear").addEventListener("click", () => go({ where: "", q: "", offset: 0, view: listView() }));
  $("#sort").addEventListener("change", (ev) => go({ sort: ev.target.value, offset: 0 }));
  $("#key").addEventListener("change", (ev) => go({ where: withTerm(state.where, "key", ev.target.value ? [ev.target.value] : []), offset: 0, view: listView() }));
  $("#prev").addEventListener("click", () => go({ offset: Math.max(0, state.offset - PAGE) }));
  $("#next").addEventListener("click", () => go({ offset: state.offset + PAGE }));
  $("#back").addEventListener("click", () => {
    if (state.view === "upload") { go({ view: "tracks" }); return; }
    if (history.state && history.state.depth > 0) history.back(); else go({ view: "tracks", seed: null });
  });
  $("#view-favourites").addEventListener("click", () => go({ view: "favourites" }));
  $("#view-playlists").addEventListener("click", () => go({ view: "playlists" }));
  $("#filters-open").addEventListener("click", () => setFilters(true));
  $("#filters-close").addEventListener("click", () => setFilters(false));
  $("#upload-open").addEventListener("click", () => {
    const f = $("#upload-form");
    f.hidden = !f.hidden;
    $("#upload-open").setAttribute("aria-expanded", f.hidden ? "false" : "true");
    if (!f.hidden) $("#upload-file").focus();
  });
  $("#upload-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = $("#upload-file").files[0];
    if (!f) { setStatus("Choose an audio file first.", true); return; }
    const fd = new FormData();
    fd.append("file", f);
    setStatus(`Listening to ${f.name}…`);
    try {
      const res = await api("/api/similar/upload?" + filterParams({ k: SIMILAR_K }), { method: "POST", body: fd });
      ui.uploadHits = res.hits;
      ui.uploadName = `your clip “${f.name}”`;
      $("#upload-form").hidden = true;
      $("#upload-open").setAttribute("aria-expanded", "false");
      await go({ view: "upload" });
      window.scrollTo({ top: 0 });
      $("#back").focus({ preventScroll: true });
    } catch (e) { setStatus(e.message, true); }
  });
  $("#add-form").addEventListener("submit", () => { confirmAdd(); });
  $("#add-cancel").addEventListener("click", () => $("#add-dialog").close());

  $("#pl-play").addEventListener("click", () => {
    if (!ui.current) { select(Math.max(ui.index, 0), true); return; }
    if (a.paused) a.play().catch(() => {}); else a.pause();
  });
  $("#pl-prev").addEventListener("click", () => step(-1));
  $("#pl-next").addEventListener("click", () => step(1));
  $("#pl-fav").addEventListener("click", () => { if (ui.current) toggleFavourite(ui.current); });
  $("#pl-similar").addEventListener("click", () => { if (ui.current) openSimilar(ui.current); });
  for (const ev of ["play", "pause", "ended"]) a.addEventListener(ev, updatePlayButtons);
  a.addEventListener("timeupdate", drawWave);
  a.addEventListener("loadedmetadata", drawWave);
  a.addEventListener("ended", () => { if (ui.index >= 0 && ui.index < ui.rows.length - 1) step(1); });
  const wave = $("#wave");
  wave.addEventListener("click", (ev) => {
    const r = wave.getBoundingClientRect();
    seekTo((ev.clientX - r.left) / r.width);
  });
  wave.addEventListener("keydown", (ev) => {
    const dur = a.duration || 0;
    if (!dur) return;
    const by = { ArrowLeft: -5, ArrowRight: 5, PageDown: -30, PageUp: 30 }[ev.key];
    if (by !== undefined) { ev.preventDefault(); ev.stopPropagation(); seekTo((a.currentTime + by) / dur); }
    else if (ev.key === "Home") { ev.preventDefault(); seekTo(0); }
    else if (ev.key === "End") { ev.preventDefault(); seekTo(0.999); }
  });
  new ResizeObserver(drawWave).observe(wave);

  document.addEventListener("keydown", (ev) => {
    if ($("#add-dialog").open) return;
    const tag = (ev.target && ev.target.tagName) || "";
    const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(tag);
    if (ev.key === "Escape") {
      if (document.body.classList.contains("filters-open")) setFilters(false);
      else if (typing) ev.target.blur();
      return;
    }
    if (typing || ev.altKey || ev.ctrlKey || ev.metaKey) return;
    if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
      if (tag === "CANVAS") return;
      ev.preventDefault();
      step(ev.key === "ArrowDown" ? 1 : -1);
    } else if ((ev.key === " " || ev.code === "Space") && tag !== "BUTTON" && tag !== "A") {
      ev.preventDefault();
      if (!ui.current) { select(Math.max(ui.index, 0), true); return; }
      if (a.paused) a.play().catch(() => {}); else a.pause();
    } else if (ev.key === "Enter" && ev.target.classList && ev.target.classList.contains("row")) {
      ev.preventDefault();
      const i = [...$("#list").children].indexOf(ev.target);
      if (i >= 0) { ui.index = -1; select(i, true); }
    }
  });
  // focus landing on a row (Tab, a click on its buttons) makes it the roving row
  $("#list").addEventListener("focusin", (ev) => {
    const li = ev.target.closest && ev.target.closest("#list > li.row");
    if (!li || !ui.rows.length) return;
    const i = [...$("#list").children].indexOf(li);
    if (i >= 0 && i !== ui.index && li.tabIndex !== 0) { ui.index = i; markSelected(false); }
  });
  window.addEventListener("popstate", () => { fromURL(); load(); });
}

function start() {
  fromURL();
  if (state.view === "upload") state.view = "tracks";
  if (!history.state) history.replaceState({ depth: 0 }, "", location.href);
  wire();
  refreshFavourites().then(load);
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
