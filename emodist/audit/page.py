"""The review page: one HTML file that opens from disk with no server.

The top clips are cards (keyframe strip, original and predicted label, the distribution
as a bar, the motion descriptions as a timeline, buttons to keep the original, take the
predicted label or pick another). Filters by original and predicted class, keyboard
shortcuts, decisions kept in the browser's localStorage, and exported as a CSV
(clip_id, uri, original, decision, decided_label) that `emodist audit --apply` reads.
"""
from __future__ import annotations

import hashlib
import html
import json
import re
from pathlib import Path

import pyarrow as pa

from emodist import schema as col
from emodist.audit import frames as keyframes

FRAMES_DIR = "frames"
DECISIONS = ("keep", "predicted", "other")  # the `decision` column's values


def _stem(clip_id: str, rank: int) -> str:
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", clip_id)[-40:]
    return f"{rank:05d}_{safe}"


def cards(issues: pa.Table, out_dir: Path, cfg, with_frames: bool = True) -> list[dict]:
    """The page's cards from issues.parquet's first rows, their keyframes written beside it."""
    out = []
    for r in issues.to_pylist():
        files, why = [], None
        if with_frames:
            times = keyframes.strip_times(r[col.KEYFRAME_TS])
            files, why = keyframes.write_strip(r[col.URI], times, out_dir / FRAMES_DIR, _stem(r[col.CLIP_ID], r["rank"]), cfg)
        out.append({
            "rank": r["rank"], "clip_id": r[col.CLIP_ID], "uri": r[col.URI],
            "original": r["original_label"], "predicted": r["predicted_label"],
            "score": r["quality_score"], "issue": r["is_issue"], "dist": r["distribution"],
            "descriptions": r[col.DESCRIPTIONS], "spans": r[col.GAP_SPANS],
            "frames": files, "frames_note": why, "other": r.get("other_label"),
        })
    return out


def write_page(out_dir: Path, cards_: list[dict], labels: list[str], summary: dict) -> Path:
    """DIR/index.html with the cards' data inline (a file:// page cannot fetch JSON)."""
    page_id = hashlib.sha256(json.dumps([c["clip_id"] for c in cards_] + labels).encode()).hexdigest()[:12]
    data = {"id": page_id, "labels": labels, "cards": cards_, "summary": summary, "decisions": list(DECISIONS)}
    # '</' inside the JSON would end the script element early
    blob = json.dumps(data).replace("</", "<\\/")
    path = out_dir / "index.html"
    path.write_text(_TEMPLATE.replace("__TITLE__", html.escape(summary.get("title", "emodist audit")))
                    .replace("__DATA__", blob), encoding="utf-8")
    return path


_TEMPLATE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>__TITLE__</title>
<style>
body{font:14px system-ui,sans-serif;margin:0;background:#f4f4f6;color:#222}
header{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:8px 16px;z-index:2}
header h1{font-size:16px;margin:0 0 4px}
header .method{color:#666;font-size:12px}
.bar-controls{display:flex;gap:12px;align-items:center;flex-wrap:wrap;margin-top:6px}
main{padding:12px 16px;display:grid;gap:12px}
.card{background:#fff;border:2px solid #ddd;border-radius:6px;padding:10px}
.card.current{border-color:#3b6fd8}
.card.decided{opacity:.75}
.card .head{display:flex;gap:12px;align-items:baseline;flex-wrap:wrap}
.card .id{font-weight:600}
.lab{padding:1px 6px;border-radius:3px;color:#fff}
.strip{display:flex;gap:4px;overflow-x:auto;margin:8px 0}
.strip img{height:96px;border-radius:3px}
.dist{display:flex;height:16px;border-radius:3px;overflow:hidden;margin:6px 0}
.dist span{display:block;height:100%}
.timeline{position:relative;height:40px;border-left:1px solid #bbb;margin:6px 0;font-size:11px}
.timeline div{position:absolute;top:0;height:36px;background:#eef2fb;border:1px solid #c8d3ee;
  border-radius:3px;overflow:hidden;padding:1px 3px;box-sizing:border-box}
.actions{display:flex;gap:8px;align-items:center}
.decision{font-weight:600;color:#1d7a32}
.note{color:#a33;font-size:12px}
.keys{color:#666;font-size:12px}
</style></head>
<body>
<header>
<h1>__TITLE__</h1>
<div class="method" id="method"></div>
<div class="bar-controls">
<label>original <select id="filter-original"><option value="">all</option></select></label>
<label>predicted <select id="filter-predicted"><option value="">all</option></select></label>
<span id="count"></span>
<button id="export">export decisions (CSV)</button>
<span id="exported"></span>
<span id="legend"></span>
<span class="keys">keys: j/k next/previous, o keep original, p take predicted, 1-9 pick a label, u undo, e export</span>
</div>
</header>
<main id="cards"></main>
<textarea id="csv" hidden></textarea>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const KEY = "emodist-audit:" + DATA.id;
const PALETTE = ["#e6a100","#3b6fd8","#888888","#d1342f","#8e44ad","#2e9e5b","#1b1b1b",
                 "#c0587e","#17a2b8","#6c4f3d","#9aa83a","#ff7f50"];
const colour = l => PALETTE[DATA.labels.indexOf(l) % PALETTE.length] || "#555";
let decisions = {};
try { decisions = JSON.parse(localStorage.getItem(KEY) || "{}"); } catch (e) { decisions = {}; }
let current = 0;

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k === "style") e.style.cssText = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const k of kids) if (k != null) e.append(k);
  return e;
}
function save() { try { localStorage.setItem(KEY, JSON.stringify(decisions)); } catch (e) {} }

function decide(card, decision, label) {
  const c = DATA.cards[+card.dataset.index];
  decisions[c.clip_id] = {decision, label};
  save(); paint(card);
}
function undo(card) { delete decisions[DATA.cards[+card.dataset.index].clip_id]; save(); paint(card); }

function paint(card) {
  const c = DATA.cards[+card.dataset.index], d = decisions[c.clip_id];
  card.classList.toggle("decided", !!d);
  card.querySelector(".decision").textContent = d ? "decided: " + d.label + " (" + d.decision + ")" : "";
}

function render() {
  const main = document.getElementById("cards");
  DATA.cards.forEach((c, i) => {
    const strip = el("div", {class: "strip"}, ...c.frames.map(src => el("img", {src, alt: c.clip_id, loading: "lazy"})));
    const dist = el("div", {class: "dist", title: "distribution"},
      ...c.dist.map((p, j) => el("span", {style: `width:${(100 * p).toFixed(2)}%;background:${colour(DATA.labels[j])}`,
                                          title: `${DATA.labels[j]} ${p.toFixed(3)}`})));
    const end = Math.max(1e-9, ...c.spans.map(s => s[1]));
    const timeline = el("div", {class: "timeline"}, ...c.descriptions.map((d, j) => {
      const s = c.spans[j] || [j, j + 1];
      return el("div", {style: `left:${100 * s[0] / end}%;width:${100 * (s[1] - s[0]) / end}%`,
                        title: `${s[0].toFixed(2)}-${s[1].toFixed(2)} s: ${d}`}, d);
    }));
    const pick = el("select", {class: "pick", onchange: e => { if (e.target.value) decide(card, "other", e.target.value); }},
      el("option", {value: ""}, "pick another..."), ...DATA.labels.map(l => el("option", {value: l}, l)));
    const card = el("section", {class: "card", "data-index": i, "data-clip-id": c.clip_id,
                                "data-original": c.original, "data-predicted": c.predicted,
                                onclick: () => focus(i, false)},
      el("div", {class: "head"},
        el("span", {class: "rank"}, "#" + c.rank), el("span", {class: "id"}, c.clip_id),
        el("span", null, "original ", el("span", {class: "lab", style: `background:${colour(c.original)}`}, c.original || "?")),
        el("span", null, "predicted ", el("span", {class: "lab", style: `background:${colour(c.predicted)}`}, c.predicted)),
        c.other ? el("span", null, "other run ", el("span", {class: "lab", style: `background:${colour(c.other)}`}, c.other)) : null,
        el("span", {class: "score"}, c.score == null ? "not scored" : "label quality " + c.score.toFixed(3)),
        c.issue ? el("span", {class: "note"}, "flagged") : null,
        el("span", {class: "uri", title: c.uri}, c.uri.split("/").pop())),
      strip, c.frames_note ? el("div", {class: "note"}, "no keyframes: " + c.frames_note) : null,
      c.dist.length ? dist : null, c.descriptions.length ? timeline : null,
      el("div", {class: "actions"},
        el("button", {class: "keep", onclick: () => decide(card, "keep", c.original)}, "keep original (o)"),
        el("button", {class: "take", onclick: () => decide(card, "predicted", c.predicted)}, "take predicted (p)"),
        pick, el("button", {class: "undo", onclick: () => undo(card)}, "undo"),
        el("span", {class: "decision"})));
    main.append(card); paint(card);
  });
  for (const [id, key] of [["filter-original", "original"], ["filter-predicted", "predicted"]]) {
    const sel = document.getElementById(id);
    [...new Set(DATA.cards.map(c => c[key]))].sort().forEach(l => sel.append(el("option", {value: l}, l)));
    sel.addEventListener("change", applyFilters);
  }
  document.getElementById("legend").append(...DATA.labels.map(l =>
    el("span", {class: "lab", style: `background:${colour(l)};margin-right:2px`}, l)));
  const s = DATA.summary;
  document.getElementById("method").textContent = s.method_line || "";
  applyFilters();
}

function visible() { return [...document.querySelectorAll(".card")].filter(c => c.style.display !== "none"); }
function applyFilters() {
  const o = document.getElementById("filter-original").value, p = document.getElementById("filter-predicted").value;
  document.querySelectorAll(".card").forEach(card => {
    card.style.display = (!o || card.dataset.original === o) && (!p || card.dataset.predicted === p) ? "" : "none";
  });
  document.getElementById("count").textContent = visible().length + " of " + DATA.cards.length + " clips";
  current = 0; focus(0, false);
}
function focus(k, scroll = true) {
  const cards = visible();
  document.querySelectorAll(".card.current").forEach(c => c.classList.remove("current"));
  if (!cards.length) return;
  current = Math.max(0, Math.min(k, cards.length - 1));
  cards[current].classList.add("current");
  if (scroll) cards[current].scrollIntoView({block: "center"});
}

function csvCell(v) { v = String(v ?? ""); return /[",\n\r]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v; }
function exportCsv() {
  const lines = ["clip_id,uri,original,decision,decided_label"];
  for (const c of DATA.cards) {
    const d = decisions[c.clip_id];
    if (d) lines.push([c.clip_id, c.uri, c.original, d.decision, d.label].map(csvCell).join(","));
  }
  const text = lines.join("\n") + "\n";
  document.getElementById("csv").value = text;
  const a = el("a", {href: URL.createObjectURL(new Blob([text], {type: "text/csv"})), download: "decisions.csv"});
  document.body.append(a); a.click(); a.remove();
  document.getElementById("exported").textContent = "exported " + (lines.length - 1) + " decisions to decisions.csv";
}
document.getElementById("export").addEventListener("click", exportCsv);

document.addEventListener("keydown", e => {
  if (e.target.tagName === "SELECT" || e.target.tagName === "INPUT" || e.ctrlKey || e.metaKey || e.altKey) return;
  const card = visible()[current];
  const c = card && DATA.cards[+card.dataset.index];
  if (e.key === "j" || e.key === "ArrowDown") focus(current + 1);
  else if (e.key === "k" || e.key === "ArrowUp") focus(current - 1);
  else if (e.key === "e") exportCsv();
  else if (!card) return;
  else if (e.key === "o") { decide(card, "keep", c.original); focus(current + 1); }
  else if (e.key === "p") { decide(card, "predicted", c.predicted); focus(current + 1); }
  else if (e.key === "u") undo(card);
  else if (/^[1-9]$/.test(e.key) && DATA.labels[+e.key - 1]) { decide(card, "other", DATA.labels[+e.key - 1]); focus(current + 1); }
  else return;
  e.preventDefault();
});
render();
</script>
</body></html>
"""
