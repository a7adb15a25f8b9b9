// gridtrain serve's page: plain JavaScript, no build step, no library.
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;

async function api(method, url, body) {
  const init = {method, headers: {"X-CSRF-Token": CSRF}, credentials: "same-origin"};
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  const data = (response.headers.get("content-type") || "").includes("json") ? await response.json() : null;
  return {ok: response.ok, status: response.status, data};
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const child of children) node.append(child);
  return node;
}

const fmt = (x, digits = 4) => (typeof x === "number" ? x.toFixed(digits) : "–");

function problems(data) {
  const detail = data && data.detail;
  if (Array.isArray(detail)) return detail.map((p) => [p.key || "config", p.message]);
  return [["error", String(detail || "request failed")]];
}

// -- the runs table and the submit form ---------------------------------------------------------

function progressBar(fraction) {
  const bar = el("div", {class: "bar small"}, el("div", {class: "fill", style: `width:${(100 * fraction).toFixed(1)}%`}));
  return bar;
}

function renderRuns(runs) {
  const body = document.querySelector("#runs tbody");
  body.replaceChildren();
  if (!runs.length) {
    body.append(el("tr", {}, el("td", {colspan: 6, class: "muted"}, "no runs yet: submit one below")));
  }
  for (const run of runs) {
    const p = run.progress;
    const actions = el("td", {});
    if (run.files.includes("model")) actions.append(el("a", {href: `/api/runs/${run.name}/model`, class: "button"}, "model"));
    body.append(el("tr", {"data-run": run.name},
      el("td", {}, el("a", {href: `/runs/${run.name}`}, run.name)),
      el("td", {}, el("span", {class: `phase ${run.phase}`}, run.phase)),
      el("td", {}, progressBar(p.fraction), ` ${p.shards_done}/${p.shards_total} shards`),
      el("td", {}, `${p.epoch}/${p.epochs}`),
      el("td", {}, fmt(run.auc !== null ? run.auc : p.val_auc)),
      actions));
  }
}

function showErrors(list) {
  const box = document.getElementById("config-errors");
  box.replaceChildren(...list.map(([key, message]) => el("p", {class: "error"}, el("b", {}, key), ": ", message)));
}

async function loadExample() {
  // the example config/config.yaml, packaged with the page (static/example.yaml)
  const box = document.getElementById("config-yaml");
  if (box.value.trim() && !confirm("Replace the config in the form with the example?")) return;
  const response = await fetch("/static/example.yaml", {credentials: "same-origin"});
  if (!response.ok) return;
  box.value = await response.text();
  document.getElementById("config-errors").replaceChildren(el("p", {class: "muted"},
    "the example trains on the toy dataset (gridtrain toy); point dataset at your own files"));
}

async function check() {
  const yaml = document.getElementById("config-yaml").value;
  const result = await api("POST", "/api/configs/validate", {yaml});
  if (result.ok) {
    document.getElementById("config-errors").replaceChildren(el("p", {class: "ok"}, "the config is valid"));
  } else {
    showErrors(problems(result.data));
  }
  return result.ok;
}

function setupRunsPage() {
  const source = new EventSource("/api/events");
  source.addEventListener("runs", (e) => renderRuns(JSON.parse(e.data).runs));
  document.getElementById("example-button").addEventListener("click", loadExample);
  document.getElementById("check-button").addEventListener("click", check);
  document.getElementById("submit-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const state = document.getElementById("submit-state");
    if (!(await check())) return;
    state.textContent = "starting (the model is built once before the run detaches)…";
    const name = document.getElementById("run-name").value.trim();
    const yaml = document.getElementById("config-yaml").value;
    const result = await api("POST", "/api/runs", {name, yaml});
    if (result.ok) {
      location.href = `/runs/${name}`;
    } else {
      state.textContent = "";
      showErrors(problems(result.data));
    }
  });
}

// -- one run ------------------------------------------------------------------------------------

function drawCurve(svg, series) {
  // series: [{points: [[x, y], ...], cls}], drawn in one frame of 400x220 with axes' ranges
  const all = series.flatMap((s) => s.points);
  svg.replaceChildren();
  if (!all.length) return;
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs, Math.min(...xs) + 1e-9)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const X = (x) => 40 + (350 * (x - x0)) / (x1 - x0 || 1), Y = (y) => 200 - (180 * (y - y0)) / (y1 - y0);
  const ns = "http://www.w3.org/2000/svg";
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
  };
  add("line", {x1: 40, y1: 200, x2: 390, y2: 200, class: "axis"});
  add("line", {x1: 40, y1: 20, x2: 40, y2: 200, class: "axis"});
  add("text", {x: 36, y: 24, class: "tick", "text-anchor": "end"}, y1.toPrecision(3));
  add("text", {x: 36, y: 200, class: "tick", "text-anchor": "end"}, y0.toPrecision(3));
  for (const s of series) {
    if (!s.points.length) continue;
    add("polyline", {points: s.points.map((p) => `${X(p[0])},${Y(p[1])}`).join(" "), class: s.cls});
    for (const p of s.points.length < 40 ? s.points : []) add("circle", {cx: X(p[0]), cy: Y(p[1]), r: 2.5, class: s.cls});
  }
}

async function refreshStatus(name) {
  const result = await api("GET", `/api/runs/${name}/status`);
  if (!result.ok) return;
  const status = result.data, ps = status.ps;
  const line = document.getElementById("ps-line");
  line.textContent = typeof ps === "object" && ps
    ? `parameter server ${ps.address}: ${ps.workers_connected} workers connected, ${ps.updates_per_s.toFixed(1)} updates/s`
    : (ps || `${status.executor} executor, ${status.workers_asked} workers`);
  const body = document.querySelector("#jobs tbody");
  const jobs = status.jobs;
  if (!jobs) return;
  body.replaceChildren(...jobs.workers.map((w) => el("tr", {},
    el("td", {}, w.name), el("td", {}, String(w.job)), el("td", {}, el("span", {class: `phase ${w.state}`}, w.state)),
    el("td", {}, String(w.attempts)),
    el("td", {}, w.state === "held" ? `code ${w.hold_reason_code}: ${w.hold_reason}` : ""))));
}

// The report's plots, the most telling first; the first of MAIN_PLOTS gets a row of its own.
const PLOT_ORDER = ["roc.png", "response.png", "confusion.png", "rejection.png", "residuals.png",
  "training_vs_updates.png", "training_vs_time.png", "staleness.png", "throughput.png"];
const MAIN_PLOTS = ["roc.png", "response.png"];

async function showPlots(name) {
  const result = await api("GET", `/api/runs/${name}/plots`);
  if (!result.ok || !result.data.plots.length) return;
  const rank = (plot) => (PLOT_ORDER.includes(plot) ? PLOT_ORDER.indexOf(plot) : PLOT_ORDER.length);
  const plots = [...result.data.plots].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  const box = document.getElementById("plots");
  box.replaceChildren(...plots.map((plot) => el("figure", MAIN_PLOTS.includes(plot) && plot === plots[0] ? {class: "main"} : {},
    el("img", {src: `/api/runs/${name}/plots/${plot}`, alt: plot, id: `plot-${plot.replace(".png", "")}`}),
    el("figcaption", {}, plot))));
}

// metrics.json as a table: the figures a physicist compares runs by, for the run's task.
function metricRows(m) {
  const rows = [];
  const add = (label, value, digits = 4) => {
    if (typeof value === "number") rows.push([label, fmt(value, digits)]);
    else if (typeof value === "string" && value) rows.push([label, value]);
  };
  add("AUC", m.auc);
  for (const [cls, auc] of Object.entries(m.class_auc || {})) add(`AUC, ${cls} vs rest`, auc);
  add("accuracy", m.accuracy);
  add("loss", m.loss);
  if (m.log_loss !== m.loss) add("log loss", m.log_loss);
  for (const [target, t] of Object.entries(m.targets || {})) {
    add(`RMSE, ${target}`, t.rmse);
    add(`resolution, ${target}`, t.resolution);
    add(`bias, ${target}`, t.bias);
  }
  if (typeof m.best_epoch === "number") {  // counted from 0, as the report and status count
    const of = typeof m.epochs === "number" ? ` (of epochs 0–${m.epochs - 1})` : "";
    rows.push(["best epoch", `${m.best_epoch}${of}${m.stopped_early ? ", stopped early" : ""}`]);
  }
  if (typeof m.validation_events === "number") add("validation events", m.validation_events.toLocaleString("en"));
  if (typeof m.wall_time_s === "number") add("wall time", `${m.wall_time_s.toFixed(1)} s`);
  return rows;
}

async function showMetrics(name) {
  const result = await api("GET", `/api/runs/${name}/metrics`);
  if (!result.ok || !result.data) return;
  const rows = metricRows(result.data);
  document.querySelector("#metrics tbody").replaceChildren(...rows.map(([label, value]) =>
    el("tr", {}, el("td", {}, label), el("td", {}, value))));
  document.getElementById("metrics-section").classList.toggle("hidden", !rows.length);
}

function setupRunPage() {
  const name = document.getElementById("run").dataset.run;
  const history = [];
  let source = null, statusTimer = null;
  const redraw = () => {
    const shards = history.filter((r) => r.type === "shard" && typeof r.loss === "number");
    const epochs = history.filter((r) => r.type === "epoch");
    drawCurve(document.getElementById("loss-curve"), [
      {points: shards.map((r, i) => [i + 1, r.loss]), cls: "train"},
      {points: epochs.filter((r) => typeof r.val_loss === "number").map((r) => [(r.epoch + 1) * shards.length / epochs.length, r.val_loss]), cls: "val"},
    ]);
    drawCurve(document.getElementById("auc-curve"), [
      {points: epochs.filter((r) => typeof r.val_auc === "number").map((r) => [r.epoch + 1, r.val_auc]), cls: "val"},
    ]);
  };
  const onProgress = (run) => {
    const p = run.progress;
    const phase = document.getElementById("phase");
    phase.textContent = run.phase;
    phase.className = `phase ${run.phase}`;
    document.getElementById("progress-bar").style.width = `${(100 * p.fraction).toFixed(1)}%`;
    document.getElementById("progress-text").textContent =
      `epoch ${p.epoch}/${p.epochs} · shards ${p.shards_done}/${p.shards_total} · train loss ${fmt(p.train_loss)} · val AUC ${fmt(run.auc !== null ? run.auc : p.val_auc)}`;
    document.getElementById("model-link").classList.toggle("hidden", !run.files.includes("model"));
    document.getElementById("export-link").classList.toggle("hidden", !run.files.includes("export"));
    document.getElementById("cancel-button").disabled = run.phase !== "training";
    document.getElementById("resume-button").disabled = run.phase === "training" || run.phase === "finished";
  };
  const follow = () => {
    history.length = 0;
    source = new EventSource(`/api/runs/${name}/events`);
    source.addEventListener("progress", (e) => onProgress(JSON.parse(e.data)));
    source.addEventListener("history", (e) => {
      // The event's id starts with how many records the stream has sent, these included: each
      // record goes to its own place, so one sent again after a reconnect is not drawn twice.
      const records = JSON.parse(e.data), sent = parseInt(e.lastEventId, 10);
      const start = Number.isInteger(sent) ? Math.max(0, sent - records.length) : history.length;
      history.splice(Math.min(start, history.length), records.length, ...records);
      redraw();
    });
    source.addEventListener("end", () => {
      source.close();
      clearInterval(statusTimer);
      refreshStatus(name);
      showMetrics(name);
      showPlots(name);
    });
    refreshStatus(name);
    statusTimer = setInterval(() => refreshStatus(name), 5000);
  };
  const action = (what) => async () => {
    const state = document.getElementById("action-state");
    state.textContent = `${what}…`;
    const result = await api("POST", `/api/runs/${name}/${what}`);
    state.textContent = result.ok ? result.data.message : problems(result.data).map((p) => p[1]).join("; ");
    if (result.ok && what === "resume") { if (source) source.close(); clearInterval(statusTimer); follow(); }
  };
  document.getElementById("cancel-button").addEventListener("click", action("cancel"));
  document.getElementById("resume-button").addEventListener("click", action("resume"));
  follow();
}

if (document.getElementById("runs")) setupRunsPage();
if (document.getElementById("run")) setupRunPage();
