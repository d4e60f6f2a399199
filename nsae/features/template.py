"""The pages' inline CSS and JavaScript (no external file, no network: they open from disk).

Every page embeds its data as JSON in <script type="application/json" id="data">.
LAYER_JS renders one feature at a time (the one in the URL's #hash); INDEX_JS fills each
layer's sortable, filterable table and answers the token search; COMPARE_JS opens a pair's
two feature pages side by side.
"""

from __future__ import annotations

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1300px;padding:12px 20px;
color:#222}
h1{font-size:1.4em}h2{font-size:1.2em;margin-top:1.4em}h3{font-size:1.05em;margin:1em 0 .3em}
table{border-collapse:collapse;font-size:13px}td,th{padding:2px 8px;border-bottom:1px solid #ddd;
text-align:right}th{cursor:pointer;background:#f4f4f4;position:sticky;top:0;user-select:none}
td:first-child,th:first-child{text-align:left}.scroll{max-height:520px;overflow:auto;
max-width:100%}
.note{color:#555;font-size:13px}.dead{color:#b00}.ctx{font-family:ui-monospace,monospace;
font-size:12.5px;white-space:pre-wrap;margin:2px 0;padding:2px 4px;border-left:3px solid #eee}
.ctx span{border-radius:2px}.ctx .hit{outline:1.5px solid #c00;font-weight:bold}
.val{display:inline-block;width:4.5em;color:#555;text-align:right;margin-right:.6em}
.grid{display:flex;flex-wrap:wrap;gap:18px}.grid>div{flex:1 1 380px;min-width:0}
.tok{display:inline-block;font-family:ui-monospace,monospace;background:#eef;margin:1px;
padding:0 3px;border-radius:3px;font-size:12px}.tok.down{background:#fee}
input,select,button{font:inherit;padding:2px 6px}svg{max-width:100%;height:auto}
#results li{margin:1px 0}.frames{display:flex;gap:8px}.frames iframe{flex:1;height:760px;
border:1px solid #ccc;min-width:0}
"""

COMMON_JS = r"""
const D = JSON.parse(document.getElementById("data").textContent);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;",
  ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const fmt = (v) => v === null || v === undefined ? "-" : (Math.abs(v) >= 1e4 ||
  (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(2) : +v.toPrecision(4));
"""

LAYER_JS = r"""
const V = D.vocab || [];
function ctx(e, scale) {
  const [value, token, ids, acts, centre] = e;
  const spans = ids.map((t, i) => {
    const a = Math.max(0, Math.min(1, acts[i] / (scale || 1)));
    const cls = i === centre ? " class='hit'" : "";
    return `<span${cls} style='background:rgba(255,120,0,${a.toFixed(3)})' ` +
      `title='${esc(fmt(acts[i]))}'>${esc(V[t] === undefined ? t : V[t])}</span>`;
  }).join("");
  return `<div class='ctx'><span class='val'>${fmt(value)}</span>${spans}</div>`;
}
function hist(j) {
  const [bins, counts] = D.hist[j];
  if (!bins.length) return "<p class='note'>never fires on these tokens</p>";
  const lo = bins[0], hi = bins[bins.length - 1], n = hi - lo + 1, W = 420, H = 110;
  const top = Math.max(...counts), bw = W / n;
  const e = D.hist_edges, edge = (b) => b === 0 ? 0 : e[Math.min(b, e.length) - 1];
  const bars = bins.map((b, i) => {
    const h = Math.max(1, (H - 20) * counts[i] / top);
    return `<rect x='${((b - lo) * bw).toFixed(1)}' y='${(H - 18 - h).toFixed(1)}' ` +
      `width='${Math.max(1, bw - 1).toFixed(1)}' height='${h.toFixed(1)}' fill='#4a7'>` +
      `<title>[${fmt(edge(b))}, ${fmt(e[b])}): ${counts[i]}</title></rect>`;
  }).join("");
  return `<svg viewBox='0 0 ${W} ${H}' width='${W}' height='${H}'>${bars}` +
    `<text x='0' y='${H - 4}' font-size='11'>${fmt(edge(lo))}</text>` +
    `<text x='${W}' y='${H - 4}' font-size='11' text-anchor='end'>${fmt(e[hi] ?? Infinity)}` +
    `</text></svg><div class='note'>activation where it fires (log bins, 10 per decade)</div>`;
}
function toks(ids, vals, cls) {
  return ids.map((t, i) => `<span class='tok ${cls}' title='${fmt(vals[i])}'>` +
    `${esc(V[t] === undefined ? t : V[t])}</span>`).join("");
}
const BANDS = ["quantiles 0-25%", "25-50%", "50-75%"];
function show(j) {
  if (!(j >= 0 && j < D.n_features)) j = 0;
  document.getElementById("goto").value = j;
  const dead = D.count[j] === 0;
  let h = `<h2>Feature ${j}${dead ? " <span class='dead'>(dead on these tokens)</span>" : ""}</h2>`;
  h += `<table><tr><th>density</th><th>fires on</th><th>mean act</th><th>max act</th>` +
    `<th>decoder norm</th></tr><tr><td>${fmt(D.density[j])}</td><td>${D.count[j]} of ` +
    `${D.n_tokens}</td><td>${fmt(D.mean[j])}</td><td>${fmt(D.max[j])}</td>` +
    `<td>${fmt(D.dec_norm[j])}</td></tr></table>`;
  if (D.truth) h += `<p>best-matching true feature: <b>${D.truth[j]}</b> (|cos| ` +
    `${fmt(D.truth_cos[j])})</p>`;
  if (D.partner) {
    const p = D.partner[j];
    h += p < 0 ? `<p>no counterpart in ${esc(D.partner_label)} (unpaired)</p>` :
      `<p>paired with <a href='${esc(D.partner_href)}#${p}'>${esc(D.partner_label)} feature ` +
      `${p}</a> at cosine ${fmt(D.partner_cos[j])}` +
      `${D.partner_cos[j] < D.threshold ? " (below the threshold: no counterpart)" : ""}</p>`;
  }
  h += "<div class='grid'><div><h3>Activation histogram</h3>" + hist(j) + "</div><div>";
  h += "<h3>Nearest neighbours by decoder cosine</h3>" + D.nn_ids[j].map((n, i) =>
    `<a href='#${n}'>${n}</a> (${fmt(D.nn_cos[j][i])})`).join(", ");
  if (D.up) h += `<h3>Promotes</h3>${toks(D.up[j], D.up_v[j], "")}<h3>Suppresses</h3>` +
    `${toks(D.down[j], D.down_v[j], "down")}<div class='note'>${esc(D.lens)}</div>`;
  h += "</div></div>";
  if (!D.contexts) {
    h += "<p class='note'>A synthetic source has no tokens: no contexts to show.</p>";
  } else {
    const scale = D.max[j];
    h += `<h3>Top ${D.top[j].length} activating contexts</h3>`;
    h += D.top[j].map((e) => ctx(e, scale)).join("") || "<p class='note'>none</p>";
    h += "<h3>Sampled from lower quantiles of its activations</h3>";
    let band = -1;
    for (const [b, e] of D.samples[j]) {
      if (b !== band) { h += `<div class='note'>${BANDS[b]}</div>`; band = b; }
      h += ctx(e, scale);
    }
  }
  document.getElementById("card").innerHTML = h;
}
function current() { return parseInt(location.hash.slice(1), 10); }
window.addEventListener("hashchange", () => show(current()));
document.getElementById("goto").addEventListener("change", (ev) => {
  location.hash = "#" + ev.target.value; });
document.getElementById("prev").onclick = () => {
  location.hash = "#" + Math.max(0, (current() || 0) - 1); };
document.getElementById("next").onclick = () => {
  location.hash = "#" + Math.min(D.n_features - 1, (current() || 0) + 1); };
show(isNaN(current()) ? D.first : current());
"""

INDEX_JS = r"""
const LIMIT = 500;
const COLS = [["feature", "id"], ["density", "density"], ["max act", "max"],
  ["decoder norm", "dec_norm"], ["NN cos", "nn_cos"], ["status", "dead"]];
function table(L) {
  const box = document.getElementById("t" + L.layer), st = L.state;
  const minD = parseFloat(document.getElementById("min" + L.layer).value) || 0;
  const status = document.getElementById("st" + L.layer).value;
  let rows = L.rows.filter((r) => r.density >= minD &&
    (status === "all" || (status === "dead") === r.dead));
  rows.sort((a, b) => (a[st.key] > b[st.key] ? 1 : a[st.key] < b[st.key] ? -1 : a.id - b.id)
    * (st.desc ? -1 : 1));
  const head = COLS.map(([t, k]) => `<th data-key='${k}'>${t}${k === st.key ?
    (st.desc ? " \u25bc" : " \u25b2") : ""}</th>`).join("");
  const body = rows.slice(0, LIMIT).map((r) => `<tr><td><a href='${L.href}#${r.id}'>${r.id}` +
    `</a></td><td>${fmt(r.density)}</td><td>${fmt(r.max)}</td><td>${fmt(r.dec_norm)}</td>` +
    `<td>${fmt(r.nn_cos)}</td><td>${r.dead ? "<span class='dead'>dead</span>" : "alive"}` +
    `</td></tr>`).join("");
  box.innerHTML = `<div class='note'>${Math.min(rows.length, LIMIT)} of ${rows.length} ` +
    `features shown (filter: ${rows.length} of ${L.rows.length})</div><div class='scroll'>` +
    `<table class='features'><tr>${head}</tr>${body}</table></div>`;
  box.querySelectorAll("th").forEach((th) => th.onclick = () => {
    const k = th.dataset.key;
    st.desc = st.key === k ? !st.desc : k !== "id";
    st.key = k;
    table(L);
  });
}
for (const L of D.layers) {
  L.state = {key: "density", desc: true};
  L.rows = L.density.map((d, i) => ({id: i, density: d, max: L.max[i],
    dec_norm: L.dec_norm[i], nn_cos: L.nn_cos[i], dead: L.count[i] === 0}));
  for (const id of ["min", "st"]) document.getElementById(id + L.layer).oninput = () => table(L);
  table(L);
}
function search() {
  const q = document.getElementById("search").value.trim().toLowerCase();
  const out = [];
  let n = 0;
  if (q) for (const L of D.layers) {
    const keys = Object.keys(L.tokens);
    let hits = keys.filter((k) => k.toLowerCase() === q);
    if (!hits.length) hits = keys.filter((k) => k.toLowerCase().startsWith(q)).slice(0, 20);
    const mine = [];
    for (const k of hits) for (const [j, c] of L.tokens[k]) mine.push(
      `<li>layer ${L.layer}: <a href='${L.href}#${j}'>feature ${j}</a> \u2014 ${c} of its top ` +
      `contexts on <span class='tok'>${esc(k)}</span></li>`);
    n += mine.length;
    out.push(...mine.slice(0, LIMIT));
    if (mine.length > LIMIT) out.push(`<li>... layer ${L.layer}: ${mine.length - LIMIT} more</li>`);
  }
  document.getElementById("results").innerHTML = q ? (out.length ? out.join("")
    : "<li>no feature's top contexts are on that token</li>") : "";
  document.getElementById("nresults").textContent = q ? `${n} features` : "";
}
document.getElementById("search").oninput = search;
"""

COMPARE_JS = r"""
document.querySelectorAll("a.pair").forEach((a) => a.onclick = (ev) => {
  ev.preventDefault();
  document.getElementById("left").src = D.left + "#" + a.dataset.a;
  document.getElementById("right").src = D.right + "#" + a.dataset.b;
  document.getElementById("frames").scrollIntoView();
});
"""
