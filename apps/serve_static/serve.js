// stpred-serve pages: fill the lists, send the form, poll the job, show its result. No external script.
"use strict";

const page = document.body.dataset.page;
const $ = (id) => document.getElementById(id);
let options = null;

function setStatus(text, busy) {
  const status = $("status");
  status.replaceChildren();
  if (busy) {
    const spin = document.createElement("span");
    spin.className = "spinner";
    status.append(spin);
  }
  if (text) status.append(document.createTextNode(text));
}

function showError(message) {
  $("error").textContent = message ? String(message).split(/\s+/).join(" ").trim() : "";
  $("error").title = $("error").textContent;
}

function fillSelect(select, items, none) {
  select.replaceChildren();
  if (none) select.append(new Option(none, ""));
  for (const item of items) select.append(typeof item === "string" ? new Option(item, item) : new Option(item.label, item.key));
}

function chosenCheckpoint() {
  return options[page].checkpoints.find((c) => c.key === $("checkpoint").value);
}

function describe() {
  const c = chosenCheckpoint();
  if (!c) { $("checkpoint-info").textContent = "No checkpoint for this page: start stpred-serve with --ckpt."; return; }
  let text = `${c.model} on ${c.data}: input [T, C, H, W] = [${c.in_shape.join(", ")}]`;
  if (c.out_frames) text += `, ${c.out_frames} frame(s) out`;
  if (c.scores && Object.keys(c.scores).length) {
    text += "; test " + Object.entries(c.scores).map(([k, v]) => `${k} ${Number(v).toPrecision(4)}`).join(", ");
  }
  $("checkpoint-info").textContent = text;
  for (const label of document.querySelectorAll("[data-for]")) label.hidden = label.dataset.for !== (c.kind === "classify" ? "classify" : "forecast");
}

let timesPending = 0;  // body[data-times-pending]: a test waits for 0 before typing an init time of its own

async function loadTimes() {
  document.body.dataset.timesPending = String(++timesPending);
  try {
    await fillTimes();
  } finally {
    document.body.dataset.timesPending = String(--timesPending);
  }
}

async function fillTimes() {
  const list = $("times");
  list.replaceChildren();
  const sample = $("sample").value;
  if (!sample) return;
  const reply = await fetch(`/api/field-times?sample=${encodeURIComponent(sample)}`);
  if (!reply.ok) return;
  const { times } = await reply.json();
  for (const t of times) list.append(new Option(t));
  // a default with truth after it, so that the skill curve has something to show
  const c = chosenCheckpoint();
  const lead = c && c.out_frames ? c.out_frames : 1;
  const field = $("init-time");
  if (times.length > lead && (!field.value || field.dataset.proposed === "1")) {
    field.value = times[times.length - 1 - lead];
    field.dataset.proposed = "1";  // ours, not the user's: another checkpoint may propose another
  }
}

async function init() {
  try {
    options = await (await fetch("/api/options")).json();
  } catch (err) {
    showError(`cannot reach the server: ${err}`);
    return;
  }
  fillSelect($("checkpoint"), options[page].checkpoints);
  fillSelect($("sample"), options[page].samples, options[page].samples.length ? "" : "(no samples: upload a file)");
  if (options[page].samples.length) $("sample").value = options[page].samples[0];
  $("checkpoint").addEventListener("change", () => { describe(); if (page === "fields") loadTimes(); });
  $("sample").addEventListener("change", () => { if (page === "fields") { $("init-time").value = ""; loadTimes(); } });
  if ($("init-time")) $("init-time").addEventListener("input", () => { $("init-time").dataset.proposed = "0"; });
  describe();
  if (page === "fields") await loadTimes();
  $("run-form").addEventListener("submit", submit);
  document.body.dataset.ready = "1";
}

async function submit(event) {
  event.preventDefault();
  showError("");
  $("result").hidden = true;
  $("run").disabled = true;
  document.body.dataset.state = "running";
  setStatus("sending…", true);
  const form = new FormData($("run-form"));
  if ($("file").files.length) form.delete("sample"); else form.delete("file");
  try {
    const reply = await fetch(`/api/${page}`, { method: "POST", body: form });
    const body = await reply.json();
    if (!reply.ok) throw new Error(body.error || reply.statusText);
    await poll(body.job);
  } catch (err) {
    setStatus("", false);
    showError(err.message || err);
    document.body.dataset.state = "error";
  } finally {
    $("run").disabled = false;
  }
}

async function poll(jobId) {
  const started = Date.now();
  for (;;) {
    const job = await (await fetch(`/api/jobs/${jobId}`)).json();
    if (job.state === "done") {
      setStatus(`done in ${((Date.now() - started) / 1000).toFixed(1)} s`, false);
      await show(job.result);
      document.body.dataset.state = "done";
      return;
    }
    if (job.state === "error") throw new Error(job.error);
    setStatus(`${job.status}…`, true);
    await new Promise((r) => setTimeout(r, 400));
  }
}

function loaded(img, url) {
  return new Promise((resolve) => {
    img.onload = img.onerror = () => resolve();
    img.src = url;
  });
}

const fmt = (v, digits = 2) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));

async function show(r) {
  const waits = [];
  if (page === "clips") {
    waits.push(loaded($("animation"), r.animation));
    const classify = r.kind === "classify";
    $("animation-title").textContent = classify ? "Clip with its top labels" : "Context | truth | forecast";
    $("topk-card").hidden = !classify;
    $("plot-card").hidden = classify || !r.plot;
    if (classify) {
      const rows = r.top.map((t) => {
        const row = document.createElement("div");
        row.className = "bar";
        row.innerHTML = `<span class="label"></span><span class="track"><span class="fill" style="display:block;width:${(100 * t.probability).toFixed(1)}%"></span></span><span class="p">${(100 * t.probability).toFixed(1)}%</span>`;
        row.querySelector(".label").textContent = t.label;
        return row;
      });
      $("topk").replaceChildren(...rows);
      $("scores").textContent = `${r.views.clips * r.views.crops} view(s): ${r.views.clips} clip(s) × ${r.views.crops} crop(s)`;
    } else {
      if (r.plot) waits.push(loaded($("plot"), r.plot));
      const scored = r.per_lead.length;
      $("scores").textContent = scored
        ? `mean PSNR ${fmt(r.mean_psnr)} dB (persistence ${fmt(r.persistence_psnr)} dB) over ${scored} lead(s); context frames ${r.context_indices.join(", ")}`
        : `no true frames after the context: forecast of ${r.forecast_indices.length} frame(s) shown without scores`;
    }
  } else {
    const maps = r.maps;
    const slider = $("lead");
    slider.max = String(maps.length - 1);
    slider.value = "0";
    const at = async (k) => { $("lead-label").textContent = `lead ${r.leads[k]} (${k + 1}/${maps.length})`; await loaded($("map"), maps[k]); };
    slider.oninput = () => at(Number(slider.value));
    waits.push(at(0));
    $("skill-card").hidden = !r.skill;
    if (r.skill) waits.push(loaded($("skill"), r.skill));
    $("download").href = r.netcdf;
    const vars = r.variables.join(", ");
    if (r.rmse) {
      const mean = (rows) => rows.reduce((s, row) => s + row[0], 0) / rows.length;
      $("scores").textContent = `init ${r.init}, ${vars}: mean RMSE ${fmt(mean(r.rmse), 3)} (persistence ${fmt(mean(r.persistence_rmse), 3)}) over ${r.truth_leads} lead(s) with truth`;
    } else {
      $("scores").textContent = `init ${r.init}, ${vars}: the input holds no truth after the init time, so no skill curve`;
    }
  }
  $("result").hidden = false;
  await Promise.all(waits);
}

init();
