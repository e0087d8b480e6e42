// pellucid serve: the page. Plain JavaScript, no build step, no outside requests.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, model: null, image: null, predicted: null, explain: null, attack: null, vis: null };

function newJob() {
  const a = new Uint8Array(12);
  crypto.getRandomValues(a);
  return Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
}

function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = kind;
  box.hidden = !text;
}

async function failure(response) {
  try {
    const body = await response.json();
    const d = body.detail;
    if (Array.isArray(d)) return d.map((e) => `${(e.loc || []).slice(-1)[0]}: ${e.msg}`).join("; ");
    return d || response.statusText;
  } catch (_) {
    return `${response.status} ${response.statusText}`;
  }
}

async function post(path, body, signal) {
  const r = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" },
                                body: JSON.stringify(body), signal });
  if (!r.ok) throw new Error(await failure(r));
  return r.json();
}

function isAbort(e) { return e && e.name === "AbortError"; }

function cancelJob(job) {
  fetch(`/api/cancel/${job}`, { method: "POST" }).catch(() => {});
}

function busy(on) { $("busy").hidden = !on; }

function fillPredictions(list, preds, highlight) {
  list.replaceChildren();
  for (const p of preds) {
    const li = document.createElement("li");
    if (p.class === highlight) li.className = "top";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = p.label;
    name.title = `${p.label} (class ${p.class})`;
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = `${(100 * p.p).toFixed(1)}%`;
    bar.append(fill);
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = `${(100 * p.p).toFixed(1)}%`;
    li.append(name, bar, pct);
    list.append(li);
  }
}

function modelInfo() { return state.info.models.find((m) => m.name === state.model); }

function fillOptions(select, items) {
  select.replaceChildren();
  for (const [value, text] of items) {
    const o = document.createElement("option");
    o.value = value;
    o.textContent = text;
    select.append(o);
  }
}

async function init() {
  const r = await fetch("/api/models");
  state.info = await r.json();
  fillOptions($("model"), state.info.models.map((m) => [m.name, m.offered ? m.name : `${m.name} (${m.needs})`]));
  for (const o of $("model").options) {  // listed, not offered: a model whose extra is not installed
    o.disabled = !state.info.models.find((m) => m.name === o.value).offered;
  }
  const boxes = $("methods");
  for (const m of state.info.methods) {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = m.name;
    box.checked = true;
    label.append(box, ` ${m.title}`);
    boxes.append(label);
  }
  state.info.attacks.forEach((a, i) => {  // the attacks registered in pellucid.registry
    const label = document.createElement("label");
    const radio = document.createElement("input");
    radio.type = "radio";
    radio.name = "attack";
    radio.value = a.name;
    radio.checked = i === 0;
    label.append(radio, ` ${a.title}`);
    $("attacks").append(label);
  });
  bind();
  await selectModel($("model").value, false);
}

async function built(name) {
  // a model is built on first use (trained on a fresh machine): say so while it happens
  const i = state.info.models.findIndex((m) => m.name === name);
  if (state.info.models[i].state === "ready") return true;
  showMessage(`Preparing model ${name} (the first time, it is trained: up to a minute)…`, "info");
  busy(true);
  try {
    const r = await fetch(`/api/models/${encodeURIComponent(name)}`);
    if (!r.ok) throw new Error(`Model ${name}: ${await failure(r)}`);
    state.info.models[i] = await r.json();
    showMessage("");
    return true;
  } catch (e) {
    showMessage(e.message);
    return false;
  } finally {
    busy(false);
  }
}

async function selectModel(name, again = true) {
  state.model = name;
  if (!(await built(name))) return;
  const m = modelInfo();
  const classes = m.labels.map((l, i) => [i, l === String(i) ? l : `${i}: ${l}`]);
  fillOptions($("fool-target"), classes);
  fillOptions($("vis-class"), classes);
  fillOptions($("vis-layer"), m.layers.map((l) => [l.name, `${l.name} (${l.channels} channels)`]));
  updateChannelMax();
  const r = await fetch(`/api/samples?model=${encodeURIComponent(name)}`);
  const strip = $("samples");
  strip.replaceChildren();
  if (r.ok) {
    for (const s of (await r.json()).samples) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "sample";
      b.title = s.label >= 0 ? `sample: ${m.labels[s.label]}` : "sample";
      const img = document.createElement("img");
      img.src = s.url;
      img.alt = b.title;
      b.append(img);
      b.addEventListener("click", () => choose(s.image));
      strip.append(b);
    }
  }
  if (again && state.image) await choose(state.image);
  enable();
  document.dispatchEvent(new CustomEvent("model-ready", { detail: name }));  // datasets.js
}

function updateChannelMax() {
  const layer = modelInfo().layers.find((l) => l.name === $("vis-layer").value);
  $("vis-channel").max = layer ? layer.channels - 1 : 0;
}

function enable() {
  const has = !!state.image;
  $("run-explain").disabled = !has;
  $("report").disabled = !has;
  $("run-attack").disabled = !has;
  $("eps").disabled = !has;
  $("run-fool").disabled = !has;
  $("run-channel").disabled = !modelInfo().layers.length;
}

function shown(result) {
  state.image = result.image;
  state.predicted = result.predictions[0].class;
  $("image").src = result.url;
  $("current").hidden = false;
  const m = modelInfo();
  const truth = result.label >= 0 ? `true ${m.labels[result.label]} · ` : "";
  $("image-caption").textContent = `${truth}predicted ${result.predictions[0].label}`;
  fillPredictions($("predictions"), result.predictions, state.predicted);
  enable();
  explain();
}

async function choose(image) {
  showMessage("");
  busy(true);
  try {
    shown(await post("/api/predict", { model: state.model, image }));
  } catch (e) {
    if (!isAbort(e)) showMessage(e.message);
  } finally {
    busy(false);
  }
}

async function upload(file) {
  showMessage("");
  if (!file) return;
  busy(true);
  try {
    const r = await fetch(`/api/image?model=${encodeURIComponent(state.model)}`, {
      method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: file });
    if (!r.ok) throw new Error(`Upload of “${file.name}” refused: ${await failure(r)}`);
    shown(await r.json());
  } catch (e) {
    showMessage(e.message);
  } finally {
    busy(false);
    $("file").value = "";
  }
}

function stopExplain() {
  const run = state.explain;
  if (!run) return;
  run.controller.abort();
  run.jobs.forEach(cancelJob);
  state.explain = null;
  $("cancel-explain").disabled = true;
}

function explain() {
  stopExplain();
  const methods = [...document.querySelectorAll("#methods input:checked")].map((b) => b.value);
  const titles = Object.fromEntries(state.info.methods.map((m) => [m.name, m.title]));
  const cards = $("cards");
  cards.replaceChildren();
  if (!state.image || !methods.length) return;
  const run = { controller: new AbortController(), jobs: [], done: 0, total: methods.length, start: performance.now() };
  state.explain = run;
  const progress = $("explain-progress");
  progress.hidden = false;
  progress.max = run.total;
  progress.value = 0;
  $("cancel-explain").disabled = false;
  const status = $("explain-status");
  const tick = () => {
    if (state.explain !== run) return;
    status.textContent = `${run.done} of ${run.total} done · ${((performance.now() - run.start) / 1000).toFixed(1)} s`;
    if (run.done < run.total) setTimeout(tick, 200);
  };
  tick();
  for (const method of methods) {
    const card = document.createElement("figure");
    card.className = "card pending";
    card.dataset.method = method;
    const img = document.createElement("img");
    img.alt = `${titles[method]} overlay`;
    const cap = document.createElement("figcaption");
    cap.textContent = `${titles[method]}: computing…`;
    card.append(img, cap);
    cards.append(card);
    const job = newJob();
    run.jobs.push(job);
    post("/api/explain", { model: state.model, image: state.image, method, job }, run.controller.signal)
      .then((res) => new Promise((resolve, reject) => {
        img.onload = () => resolve(res);
        img.onerror = () => reject(new Error("the picture did not load"));
        img.src = res.url;
      }))
      .then((res) => {
        card.className = "card";
        cap.replaceChildren(`${titles[method]} · ${seconds(res.seconds)} `, download(res.url));
      })
      .catch((e) => {
        if (isAbort(e)) { card.className = "card cancelled"; cap.textContent = `${titles[method]}: cancelled`; return; }
        card.className = "card failed";
        cap.textContent = `${titles[method]}: ${e.message}`;
      })
      .finally(() => {
        run.done += 1;
        progress.value = run.done;
        if (run.done === run.total && state.explain === run) {
          state.explain = null;
          $("cancel-explain").disabled = true;
          status.textContent = `${run.total} done in ${((performance.now() - run.start) / 1000).toFixed(1)} s`;
        }
      });
  }
}

function seconds(s) { return s < 0.1 ? `${Math.max(1, Math.round(1000 * s))} ms` : `${s.toFixed(2)} s`; }

function download(url) {
  const a = document.createElement("a");
  a.href = `${url}?download=1`;
  a.textContent = "PNG";
  a.className = "dl";
  return a;
}

function setLink(id, url) {
  const a = $(id);
  a.href = `${url}?download=1`;
  a.hidden = false;
}

async function adversarial(path, body, label) {
  if (state.attack) { state.attack.controller.abort(); cancelJob(state.attack.job); }
  const run = { controller: new AbortController(), job: newJob() };
  state.attack = run;
  $("attack-hint").hidden = true;
  $("trio").hidden = false;
  const status = $("attack-status");
  status.textContent = `${label}: computing…`;
  try {
    const res = await post(path, { ...body, model: state.model, image: state.image, job: run.job }, run.controller.signal);
    $("adv").src = res.url;
    $("adv").hidden = false;
    $("diff").src = res.diff_url;
    $("diff").hidden = false;
    setLink("adv-dl", res.url);
    setLink("diff-dl", res.diff_url);
    $("diff-caption").firstChild.textContent = `difference ×${res.magnified.toFixed(1)} `;
    fillPredictions($("adv-predictions"), res.predictions, res.predictions[0].class);
    const flipped = res.predictions[0].class !== state.predicted;
    const extra = res.steps != null ? ` in ${res.steps} steps` : "";
    status.textContent = `${label}: max change ${res.linf.toFixed(3)}${extra}; prediction ${flipped ? "changed" : "unchanged"}`;
  } catch (e) {
    if (!isAbort(e)) status.textContent = `${label}: ${e.message}`;
  } finally {
    if (state.attack === run) state.attack = null;
  }
}

function attack() {
  const kind = document.querySelector("input[name=attack]:checked").value;
  const title = state.info.attacks.find((a) => a.name === kind).title;
  const eps = Number($("eps").value);
  adversarial("/api/attack", { kind, eps }, `${title} eps ${eps.toFixed(2)}`);
}

function fool() {
  const target = Number($("fool-target").value);
  adversarial("/api/fool", { target }, `fooling into ${modelInfo().labels[target]}`);
}

function stopVis() {
  if (!state.vis) return;
  state.vis.controller.abort();
  cancelJob(state.vis.job);
  state.vis = null;
  $("stop-vis").disabled = true;
}

async function visualize(kind) {
  stopVis();
  const steps = 100;
  const run = { controller: new AbortController(), job: newJob() };
  state.vis = run;
  const body = { model: state.model, kind, steps, job: run.job };
  let what;
  if (kind === "class") {
    body.target = Number($("vis-class").value);
    what = `class ${modelInfo().labels[body.target]}`;
  } else {
    body.layer = $("vis-layer").value;
    body.channel = Number($("vis-channel").value);
    what = `${body.layer} channel ${body.channel}`;
  }
  const progress = $("vis-progress");
  progress.hidden = false;
  progress.max = steps;
  progress.value = 0;
  $("stop-vis").disabled = false;
  const cap = $("vis-caption");
  cap.textContent = `${what}: starting…`;
  try {
    const r = await fetch("/api/visualize", { method: "POST", headers: { "Content-Type": "application/json" },
                                               body: JSON.stringify(body), signal: run.controller.signal });
    if (!r.ok) throw new Error(await failure(r));
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let last = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const frame = JSON.parse(buffer.slice(0, nl));
        buffer = buffer.slice(nl + 1);
        if (frame.error) throw new Error(frame.error);
        if (frame.done) {
          progress.value = steps;
          cap.replaceChildren(`${what}: done `, ...(last ? [download(last)] : []));
          continue;
        }
        last = frame.url;
        $("vis").src = frame.url;
        $("vis").hidden = false;
        if (frame.step != null) progress.value = frame.step;
        cap.replaceChildren(`${what}: step ${frame.step ?? steps} of ${steps} `, download(frame.url));
      }
    }
  } catch (e) {
    cap.textContent = isAbort(e) ? `${what}: stopped` : `${what}: ${e.message}`;
  } finally {
    if (state.vis === run) { state.vis = null; $("stop-vis").disabled = true; }
  }
}

async function report() {
  busy(true);
  showMessage("Building the HTML report…", "info");
  try {
    const res = await post("/api/report", { model: state.model, image: state.image });
    const a = download(res.url);
    a.download = "pellucid-report.html";
    document.body.append(a);
    a.click();
    a.remove();
    showMessage("");
  } catch (e) {
    showMessage(`Report failed: ${e.message}`);
  } finally {
    busy(false);
  }
}

function bind() {
  $("model").addEventListener("change", (e) => selectModel(e.target.value));
  $("file").addEventListener("change", (e) => upload(e.target.files[0]));
  const drop = $("drop");
  for (const ev of ["dragenter", "dragover"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const ev of ["dragleave", "drop"]) {
    drop.addEventListener(ev, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => { e.preventDefault(); upload(e.dataTransfer.files[0]); });
  $("run-explain").addEventListener("click", explain);
  $("cancel-explain").addEventListener("click", () => {
    stopExplain();
    $("explain-status").textContent = "cancelled";
  });
  $("eps").addEventListener("input", () => { $("eps-value").textContent = Number($("eps").value).toFixed(2); });
  $("eps").addEventListener("change", attack);
  $("run-attack").addEventListener("click", attack);
  document.querySelectorAll("input[name=attack]").forEach((r) => r.addEventListener("change", enable));
  $("run-fool").addEventListener("click", fool);
  $("run-class").addEventListener("click", () => visualize("class"));
  $("run-channel").addEventListener("click", () => visualize("channel"));
  $("vis-layer").addEventListener("change", updateChannelMax);
  $("stop-vis").addEventListener("click", stopVis);
  $("report").addEventListener("click", report);
}

init().catch((e) => showMessage(`Could not start: ${e.message}`));
