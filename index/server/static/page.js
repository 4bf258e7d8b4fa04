// TIPSv2 search page: text / image / box queries against /v1/search, results with heatmaps.
// The URL hash can drive it (used by the browser test and for shareable searches):
//   #text=a%20red%20car&regions=1      or      #image_id=3&box=0,0,20,20&regions=1
"use strict";
const $ = (id) => document.getElementById(id);
let queryImage = null;   // base64 of the query image (no data: prefix)
let queryBox = null;     // [x0, y0, x1, y1] in pixels of the query image
let drawStart = null;

function status(text) { $("status").textContent = text; }

async function loadIndexes() {
  const res = await fetch("/v1/indexes");
  const list = await res.json();
  $("index").innerHTML = "";
  for (const ix of list) {
    const opt = document.createElement("option");
    opt.value = ix.name; opt.textContent = `${ix.name} (${ix.size} images)`;
    $("index").appendChild(opt);
  }
}

function showQueryImage(dataUrl) {
  return new Promise((resolve) => {
    const img = new Image();
    img.onload = () => {
      const c = $("qcanvas");
      c.width = img.naturalWidth; c.height = img.naturalHeight;
      c.getContext("2d").drawImage(img, 0, 0);
      c._img = img;
      queryImage = dataUrl.split(",", 2)[1];
      queryBox = null;
      resolve();
    };
    img.src = dataUrl;
  });
}

function redrawBox() {
  const c = $("qcanvas"), g = c.getContext("2d");
  if (!c._img) return;
  g.drawImage(c._img, 0, 0);
  if (queryBox) {
    g.strokeStyle = "red"; g.lineWidth = 2;
    g.strokeRect(queryBox[0], queryBox[1], queryBox[2] - queryBox[0], queryBox[3] - queryBox[1]);
    $("boxlabel").textContent = "box " + queryBox.map((v) => Math.round(v)).join(",");
  }
}

function canvasPoint(ev) {
  const c = $("qcanvas"), r = c.getBoundingClientRect();
  return [(ev.clientX - r.left) * c.width / r.width, (ev.clientY - r.top) * c.height / r.height];
}

$("qcanvas").addEventListener("mousedown", (ev) => { drawStart = canvasPoint(ev); });
$("qcanvas").addEventListener("mouseup", (ev) => {
  if (!drawStart) return;
  const p = canvasPoint(ev);
  const box = [Math.min(drawStart[0], p[0]), Math.min(drawStart[1], p[1]), Math.max(drawStart[0], p[0]), Math.max(drawStart[1], p[1])];
  drawStart = null;
  queryBox = (box[2] - box[0] > 2 && box[3] - box[1] > 2) ? box : null;
  redrawBox();
});

$("file").addEventListener("change", () => {
  const f = $("file").files[0];
  if (!f) return;
  const reader = new FileReader();
  reader.onload = () => { $("text").value = ""; showQueryImage(reader.result); };
  reader.readAsDataURL(f);
});

function drawHeatmap(canvas, heatmap) {
  const rows = heatmap.length, cols = heatmap[0].length;
  canvas.width = cols; canvas.height = rows;
  const flat = heatmap.flat(), lo = Math.min(...flat), hi = Math.max(...flat), g = canvas.getContext("2d");
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) {
    const v = hi > lo ? (heatmap[r][c] - lo) / (hi - lo) : 0;
    g.fillStyle = `rgb(${Math.round(255 * v)},0,${Math.round(255 * (1 - v))})`;
    g.fillRect(c, r, 1, 1);
  }
}

function render(report) {
  const results = $("results");
  results.innerHTML = "";
  const entry = report.queries[0];
  for (const hit of entry.results) {
    const card = document.createElement("div");
    card.className = "hit"; card.dataset.id = hit.id; card.dataset.score = hit.score;
    const img = document.createElement("img");
    img.src = `/v1/image/${encodeURIComponent(report.name)}/${hit.id}`;
    card.appendChild(img);
    if (hit.heatmap) {
      const heat = document.createElement("canvas");
      heat.className = "heat"; drawHeatmap(heat, hit.heatmap);
      card.appendChild(heat);
    }
    if (hit.region) {
      const mark = document.createElement("div");
      mark.className = "region"; mark.dataset.row = hit.region.row; mark.dataset.col = hit.region.col;
      card.appendChild(mark);
      img.onload = () => {
        if (!hit.region.box) return;
        const s = img.width / img.naturalWidth, b = hit.region.box;
        Object.assign(mark.style, { left: 4 + b[0] * s + "px", top: 4 + b[1] * s + "px",
          width: (b[2] - b[0]) * s + "px", height: (b[3] - b[1]) * s + "px" });
      };
    }
    const label = document.createElement("div");
    const caption = (hit.meta && hit.meta.caption) ? ` “${hit.meta.caption}”` : "";
    label.textContent = `#${hit.rank} ${hit.score.toFixed(4)} id ${hit.id}` + (hit.region ? ` patch (${hit.region.row},${hit.region.col})` : "") + caption;
    card.appendChild(label);
    results.appendChild(card);
  }
  status(`${entry.results.length} results (${entry.mode}, ${entry.method}, generation ${report.generation})`);
  document.body.dataset.done = "1";
}

async function search() {
  const body = { index: $("index").value, k: Number($("k").value) || 12, regions: $("regions").checked, heatmaps: true };
  const text = $("text").value.trim();
  if (text) body.text = text;
  else if (queryImage) { body.image = queryImage; if (queryBox) body.box = queryBox; }
  else { status("type a query or choose an image"); return; }
  status("searching…");
  const res = await fetch("/v1/search", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const data = await res.json();
  if (!res.ok) { status("error: " + (data.error || JSON.stringify(data.detail))); document.body.dataset.done = "error"; return; }
  data.name = body.index;
  render(data);
}

$("form").addEventListener("submit", (ev) => { ev.preventDefault(); search(); });

async function fromHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  if (!p.toString()) return;
  if (p.get("index")) $("index").value = p.get("index");
  $("regions").checked = p.get("regions") === "1";
  if (p.get("text")) $("text").value = p.get("text");
  if (p.get("image_id")) {   // an indexed image as the query image
    const blob = await (await fetch(`/v1/image/${encodeURIComponent($("index").value)}/${p.get("image_id")}`)).blob();
    const dataUrl = await new Promise((ok) => { const r = new FileReader(); r.onload = () => ok(r.result); r.readAsDataURL(blob); });
    await showQueryImage(dataUrl);
    if (p.get("box")) { queryBox = p.get("box").split(",").map(Number); redrawBox(); }
  }
  await search();
}

loadIndexes().then(fromHash);
