// pellucid serve: the data-set views, a class's strategies (SpRAy) and its concepts (CRAFT).
// Loaded after app.js, whose helpers it uses ($, state, post, newJob, cancelJob, fillOptions, ...).
"use strict";

const sets = { facts: null, runs: {} };

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  node.append(...children);
  return node;
}

function tile(url, alt, caption, className = "") {
  return el("figure", { className }, el("img", { src: url, alt, title: alt }), el("figcaption", {}, caption));
}

function setButtons() {
  const ready = !!sets.facts;
  $("run-strategies").disabled = !ready;
  $("run-concepts").disabled = !ready || !sets.facts.layers.length;
}

function forget() {  // another model: stop the views' runs, offer nothing until its facts are read
  for (const run of Object.values(sets.runs)) { run.controller.abort(); cancelJob(run.job); }
  sets.runs = {};
  sets.facts = null;
  setButtons();
}

async function loadFacts(name) {
  forget();
  $("set-info").textContent = "reading the model's images…";
  const r = await fetch(`/api/dataset?model=${encodeURIComponent(name)}`);
  if (state.model !== name) return;
  if (!r.ok) { $("set-info").textContent = await failure(r); return; }
  const facts = await r.json();
  sets.facts = facts;
  fillOptions($("set-class"), facts.classes.map((c) => [c.class, c.label]));
  fillOptions($("scan-method"), facts.methods.map((m) => [m.name, m.title]));
  if (facts.methods.some((m) => m.name === "lrp")) $("scan-method").value = "lrp";
  const images = $("scan-images");
  images.max = facts.images;
  images.value = Math.min(400, facts.images);
  fillOptions($("concept-layer"), [["", `last (${facts.layer || "none"})`], ...facts.layers.map((l) => [l, l])]);
  $("set-info").textContent = `on ${facts.images} ${facts.set}`;
  $("strategies").replaceChildren();
  $("concepts").replaceChildren();
  $("strategies-status").textContent = $("concepts-status").textContent = "";
  setButtons();
}

// one run per view: a new one cancels the one before
async function runView(view, path, body, show) {
  const before = sets.runs[view];
  if (before) { before.controller.abort(); cancelJob(before.job); }
  const run = { controller: new AbortController(), job: newJob() };
  sets.runs[view] = run;
  const status = $(`${view}-status`);
  status.textContent = "computing…";
  try {
    show(await post(path, { ...body, model: state.model, job: run.job }, run.controller.signal), status);
  } catch (e) {
    if (!isAbort(e)) status.textContent = e.message;
  } finally {
    if (sets.runs[view] === run) delete sets.runs[view];
  }
}

function findStrategies() {
  const body = { target: Number($("set-class").value), method: $("scan-method").value,
                 images: Number($("scan-images").value) };
  runView("strategies", "/api/strategies", body, showStrategies);
}

function imageTile(im) {
  const what = `image ${im.image} · score ${im.score.toFixed(2)}${im.flagged ? " · flagged" : ""}`;
  return tile(im.url, what, `${im.score.toFixed(2)}${im.flagged ? " ⚑" : ""}`, im.flagged ? "flagged" : "");
}

function showStrategies(res, status) {
  const n = res.strategies.length;
  const method = (sets.facts.methods.find((m) => m.name === res.method) || { title: res.method }).title;
  status.textContent = `class ${res.label}: ${res.class_images} of ${res.images} ${res.set}, ${n} ` +
    `strateg${n === 1 ? "y" : "ies"} · ${method} · ${res.cached ? "scan kept from before" : seconds(res.seconds)}`;
  const legend = el("p", { className: "status" }, "Each strategy: its mean map (framed), then its most typical " +
    "images with their maps. Under each image its score: how far its evidence lies from the class's main " +
    `strategy, higher for a rarer strategy; ⚑: in a strategy of at most ${Math.round(100 * res.minority)}% of the class.`);
  const parts = res.strategies.map((s, k) => el("div", { className: "strategy" },
    el("h4", {}, `strategy ${k + 1}: ${s.size} images (${Math.round(100 * s.share)}%)`,
       ...(s.flagged ? [el("span", { className: "flag" }, " · flagged: a minority strategy")] : [])),
    el("div", { className: "tiles" }, tile(s.mean, `strategy ${k + 1}: mean map`, "mean map", "mean"),
       ...s.examples.map(imageTile))));
  const flagged = res.flagged.length
    ? [el("h3", {}, "Most flagged: the highest scores, farthest from the main strategy"), el("div", { className: "tiles" }, ...res.flagged.map(imageTile))]
    : [];
  $("strategies").replaceChildren(legend, ...parts, ...flagged, el("h3", {}, "Every class of this scan (click one)"),
                                  classTable(res));
}

function classTable(res) {
  const head = el("tr", {}, ...["class", "images", "strategies", "flagged"].map((h) => el("th", {}, h)));
  const rows = res.classes.map((c) => {
    const row = el("tr", { className: c.class === res.class ? "current" : "" },
                   ...[c.label, c.images, c.strategies, c.flagged].map((v) => el("td", {}, String(v))));
    row.addEventListener("click", () => { $("set-class").value = String(c.class); findStrategies(); });
    return row;
  });
  return el("table", { className: "classes" }, el("thead", {}, head), el("tbody", {}, ...rows));
}

function findConcepts() {
  const body = { target: Number($("set-class").value), n: Number($("concept-n").value) };
  if ($("concept-layer").value) body.layer = $("concept-layer").value;
  runView("concepts", "/api/concepts", body, showConcepts);
}

function showConcepts(res, status) {
  status.textContent = `class ${res.label}: ${res.concepts.length} concepts at ${res.layer} from ${res.images} ` +
    `${res.set} · NMF error ${res.error.toFixed(3)} · ${seconds(res.seconds)}. Bars: each concept's importance for ` +
    "the class (total Sobol index); below each, the crops that hold most of it.";
  const top = Math.max(...res.concepts.map((c) => c.importance), 1e-9);
  $("concepts").replaceChildren(...res.concepts.map((c, rank) => {
    const fill = el("span");
    fill.style.width = `${(100 * Math.max(0, c.importance) / top).toFixed(1)}%`;
    const name = `concept ${c.index}`;
    return el("li", { className: rank === 0 ? "top" : "" },
      el("span", { className: "name", title: `#${rank + 1}: ${name}, importance ${c.importance}` }, `#${rank + 1} ${name}`),
      el("span", { className: "bar" }, fill), el("span", { className: "pct" }, c.importance.toFixed(2)),
      el("div", { className: "tiles" }, ...c.crops.map((u, j) => el("img", { src: u, alt: `${name}: crop ${j + 1}` }))));
  }));
}

document.addEventListener("model-ready", (e) => {
  loadFacts(e.detail).catch((err) => { $("set-info").textContent = err.message; });
});
$("model").addEventListener("change", forget);
$("run-strategies").addEventListener("click", findStrategies);
$("run-concepts").addEventListener("click", findConcepts);
