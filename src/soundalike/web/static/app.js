// soundalike web page: plain JS, no dependencies, talks to /api only.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = {
  offset: 0, limit: 50, total: 0,
  lists: { tracks: [], similar: [] },   // rows shown in each list
  active: "tracks",                      // the list the arrow keys move in
  index: -1,                             // selected row in the active list
};

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function setStatus(text, isError = false) {
  const s = $("#status");
  s.textContent = text || "";
  s.className = isError ? "error" : "";
}

async function api(url, options) {
  const r = await fetch(url, options);
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) throw new Error((body && body.detail) || `${r.status} ${r.statusText}`);
  return body;
}

function params(extra = {}) {
  const p = new URLSearchParams();
  const where = $("#where").value.trim();
  const q = $("#q").value.trim();
  if (where) p.set("where", where);
  if (q) p.set("q", q);
  if ($("#include-suggested").checked) p.set("include_suggested", "true");
  for (const [k, v] of Object.entries(extra)) p.set(k, v);
  return p;
}

function fmtTime(s) {
  if (s == null) return "";
  const t = Math.round(s);  // round first: 119.88 s is 2:00, not 1:60
  const m = Math.floor(t / 60), r = t % 60;
  return `${m}:${String(r).padStart(2, "0")}`;
}

// ------------------------------------------------------------------ loading

async function load() {
  setStatus("loading…");
  try {
    const [page, fac] = await Promise.all([
      api("/api/tracks?" + params({ offset: state.offset, limit: state.limit })),
      api("/api/facets?" + params()),
    ]);
    state.total = page.total;
    state.lists.tracks = page.tracks;
    renderTracks();
    renderFacets(fac.facets);
    const last = Math.min(state.offset + state.limit, state.total);
    $("#count").textContent = state.total ? `${state.offset + 1}–${last} of ${state.total}` : "no tracks match";
    $("#prev").disabled = state.offset === 0;
    $("#next").disabled = last >= state.total;
    if (state.active === "tracks") state.index = -1;
    markSelected();
    setStatus((page.notes || []).join("; "));  // e.g. "no track has a tag in category 'genre' ..." 
  } catch (e) {
    setStatus(e.message, true);
  }
}

function quoteValue(v) { return /[\s|"]/.test(v) ? `"${v.replace(/"/g, "")}"` : v; }

function whereTerms() {
  // split the filter on spaces outside quotes
  return $("#where").value.match(/-?[^\s"]*"[^"]*"|\S+/g) || [];
}

function toggleFacet(category, tag) {
  const term = `${category}:${quoteValue(tag)}`;
  const terms = whereTerms();
  const i = terms.indexOf(term);
  if (i >= 0) terms.splice(i, 1); else terms.push(term);
  $("#where").value = terms.join(" ");
  state.offset = 0;
  load();
}

function renderFacets(facets) {
  const nav = $("#facets");
  nav.replaceChildren();
  const active = new Set(whereTerms());
  for (const [category, tags] of Object.entries(facets)) {
    const ul = el("ul");
    for (const { tag, count } of tags) {
      const term = `${category}:${quoteValue(tag)}`;
      const a = el("a", { href: "#", class: active.has(term) ? "facet on" : "facet", "data-term": term,
                          onclick: (ev) => { ev.preventDefault(); toggleFacet(category, tag); } },
                   tag, " ", el("span", { class: "n" }, count));
      ul.append(el("li", {}, a));
    }
    nav.append(el("section", {}, el("h3", {}, category), ul));
  }
}

function tagChips(tags) {
  const span = el("span", { class: "chips" });
  for (const t of (tags || []).slice(0, 5)) {
    span.append(el("span", { class: "chip " + (t.source || "shared"), title: `${t.category} (${t.source || "shared"})` },
                   t.tag));
  }
  return span;
}

function renderTracks() {
  const body = $("#tracks tbody");
  body.replaceChildren();
  state.lists.tracks.forEach((t, i) => {
    const more = el("button", { type: "button", class: "more", title: "more like this (within the filter)",
                                onclick: (ev) => { ev.stopPropagation(); moreLikeThis(t); } }, "more like this");
    const tr = el("tr", { "data-id": t.id, tabindex: "-1", onclick: () => select("tracks", i, true) },
                  el("td", { class: "name" }, t.name), el("td", {}, tagChips(t.tags)),
                  el("td", { class: "len" }, fmtTime(t.duration_s)), el("td", {}, more));
    body.append(tr);
  });
}

function renderSimilar(title, hits) {
  state.lists.similar = hits;
  const h = $("#similar-title");
  h.hidden = false;
  h.textContent = title;
  const body = $("#similar tbody");
  body.replaceChildren();
  if (!hits.length) body.append(el("tr", {}, el("td", {}, "no similar tracks within the filter")));
  hits.forEach((t, i) => {
    const more = el("button", { type: "button", class: "more", onclick: (ev) => { ev.stopPropagation(); moreLikeThis(t); } },
                    "more like this");
    body.append(el("tr", { "data-id": t.id, onclick: () => select("similar", i, true) },
                   el("td", { class: "score" }, t.score.toFixed(3)), el("td", { class: "name" }, t.name),
                   el("td", {}, tagChips(t.shared_tags)), el("td", {}, more)));
  });
  markSelected();
}

async function moreLikeThis(track) {
  setStatus("searching…");
  try {
    const res = await api("/api/similar?" + params({ id: track.id, k: 10 }));
    const where = $("#where").value.trim();
    renderSimilar(`More like “${track.name}”` + (where ? ` within ${where}` : ""), res.hits);
    setStatus("");
  } catch (e) {
    setStatus(e.message, true);
  }
}

// ------------------------------------------------------------------ selection & playback

function markSelected() {
  for (const name of ["tracks", "similar"]) {
    document.querySelectorAll(`#${name} tbody tr`).forEach((tr, i) => {
      tr.classList.toggle("selected", name === state.active && i === state.index);
    });
  }
}

async function select(list, i, play) {
  const rows = state.lists[list];
  if (!rows.length) return;
  i = Math.max(0, Math.min(i, rows.length - 1));
  state.active = list;
  state.index = i;
  markSelected();
  const row = document.querySelectorAll(`#${list} tbody tr`)[i];
  if (row) row.scrollIntoView({ block: "nearest" });
  const t = rows[i];
  const player = $("#player");
  player.src = `/api/tracks/${t.id}/audio`;
  player.dataset.trackId = t.id;
  if (play) player.play().catch(() => {});
  $("#now-title").textContent = t.name;
  const img = $("#spectrogram");
  img.hidden = false;
  img.src = `/api/tracks/${t.id}/spectrogram.png`;
  try {
    const d = await api(`/api/tracks/${t.id}`);
    if (state.lists[list][state.index] !== t) return;  // the user moved on meanwhile
    const preds = $("#predictions");
    preds.replaceChildren(...(d.predictions.length ? d.predictions.map(
      (p) => el("li", {}, `${p.label} `, el("span", { class: "n" }, p.p.toFixed(2))))
      : [el("li", { class: "muted" }, "this model predicts no labels")]));
    $("#track-tags").replaceChildren(...d.tags.map(
      (g) => el("li", { class: g.source }, `${g.category}:${g.tag} `, el("span", { class: "n" },
        g.source === "file" || g.source === "user" ? g.source : `${g.source} ${g.confidence.toFixed(2)}`))));
  } catch (e) {
    setStatus(e.message, true);
  }
}

document.addEventListener("keydown", (ev) => {
  const tag = (ev.target && ev.target.tagName) || "";
  if (["INPUT", "TEXTAREA", "SELECT", "BUTTON"].includes(tag) && ev.key !== "Escape") {
    if (!(tag === "BUTTON" && (ev.key === "ArrowDown" || ev.key === "ArrowUp"))) return;
  }
  if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
    ev.preventDefault();
    const step = ev.key === "ArrowDown" ? 1 : -1;
    const start = state.index < 0 ? (step > 0 ? 0 : state.lists[state.active].length - 1) : state.index + step;
    select(state.active, start, true);
  } else if (ev.key === " " || ev.code === "Space") {
    ev.preventDefault();
    const p = $("#player");
    if (!p.src) { select(state.active, Math.max(state.index, 0), true); return; }
    if (p.paused) p.play().catch(() => {}); else p.pause();
  } else if (ev.key === "Escape") {
    ev.target.blur && ev.target.blur();
  }
});

// ------------------------------------------------------------------ forms

$("#search-form").addEventListener("submit", (ev) => { ev.preventDefault(); state.offset = 0; state.active = "tracks"; load(); });
$("#include-suggested").addEventListener("change", () => { state.offset = 0; load(); });
$("#clear").addEventListener("click", () => { $("#where").value = ""; $("#q").value = ""; state.offset = 0; load(); });
$("#prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - state.limit); load(); });
$("#next").addEventListener("click", () => { state.offset += state.limit; load(); });
$("#upload-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = $("#upload-file").files[0];
  if (!f) { setStatus("choose an audio file first", true); return; }
  const fd = new FormData();
  fd.append("file", f);
  setStatus(`analyzing ${f.name}…`);
  try {
    const res = await api("/api/similar/upload?" + params({ k: 10 }), { method: "POST", body: fd });
    renderSimilar(`Like your clip “${f.name}”`, res.hits);
    setStatus("");
  } catch (e) {
    setStatus(e.message, true);
  }
});

load();
