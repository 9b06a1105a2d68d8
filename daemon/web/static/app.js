// reverser dashboard: live overview, uploads, before/after comparison. No libraries, nothing from outside.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf"]').content;

async function getJSON(url) {
  const r = await fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}});
  if (!r.ok) throw new Error(url + ": " + r.status);
  return r.json();
}

// Overview: poll /api/status every second; the progress line counts files finished since the page opened.
function overview(table) {
  const base = {};
  const set = (root, key, text) => { const el = root.querySelector('[data-k="' + key + '"]'); if (el) el.textContent = text; };
  async function tick() {
    try {
      const doc = await getJSON(table.dataset.poll);
      const head = document.querySelector("[data-status]");
      set(head, "state", doc.state); set(head, "device", doc.device); set(head, "updated", doc.updated);
      for (const [q, s] of Object.entries(doc.queues || {})) {
        const row = table.querySelector('tr[data-q="' + CSS.escape(q) + '"]');
        if (!row) continue;
        for (const k of ["waiting", "working", "processed", "failed", "per_minute", "max_batch"]) set(row, k, s[k] ?? "-");
        set(row, "version", s.model && s.model.version != null ? "v" + s.model.version : "-");
        const finished = (s.processed || 0) + (s.failed || 0);
        if (!(q in base)) base[q] = finished;
        const done = finished - base[q], flight = (s.waiting || 0) + (s.working || 0);
        const bar = row.querySelector('[data-k="progress"]');
        bar.max = Math.max(1, done + flight); bar.value = done;
        set(row, "flight", flight ? flight + " in flight, " + done + " done" : (done ? done + " done" : "idle"));
      }
    } catch (e) { /* the service may be restarting: try again at the next tick */ }
    setTimeout(tick, 1000);
  }
  tick();
}

// Upload: each dropped or chosen file is POSTed to the API, then its state is polled until done or failed (or
// unknown: finished by a run that stopped before recording it, and not found again after the restart).
function uploads(form) {
  const body = document.querySelector("#uploads tbody");
  const queue = form.querySelector("#queue"), input = form.querySelector("#files"), drop = form.querySelector("#drop");
  form.addEventListener("submit", (e) => e.preventDefault());
  input.addEventListener("change", () => { send(input.files); input.value = ""; });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); send(e.dataTransfer.files); });

  function send(files) { for (const f of files) one(f, queue.value); }

  async function one(file, q) {
    body.querySelector("tr.none")?.remove();
    const row = body.insertRow(0);
    const [name, qc, state, result] = [0, 1, 2, 3].map((i) => row.insertCell(i));
    name.textContent = file.name; qc.textContent = q; state.textContent = "sending";
    const data = new FormData(); data.append("file", file);
    const hints = form.querySelector("#hints")?.value.trim();
    if (hints) data.append("hints", hints);
    const r = await fetch("/api/queues/" + encodeURIComponent(q) + "/files",
                          {method: "POST", body: data, credentials: "same-origin", headers: {"X-CSRF-Token": csrf()}});
    const got = await r.json().catch(() => ({}));
    if (r.status !== 202) { state.textContent = "refused: " + (got.error || r.status); row.className = "failed"; return; }
    row.dataset.id = got.id;
    for (;;) {
      const s = await getJSON(got.url).catch(() => null);
      if (s) {
        state.textContent = s.state;
        if (s.state === "done") {
          const a = document.createElement("a"), img = document.createElement("img");
          a.href = "/results/" + got.id; img.src = "/thumbs/" + got.id + "/after.jpg"; img.alt = s.result_name;
          img.className = "thumb"; a.append(img, document.createTextNode(" " + s.result_name)); result.append(a);
          row.className = "done"; return;
        }
        if (s.state === "failed" || s.state === "unknown") { result.textContent = s.reason; row.className = "failed"; return; }
      }
      await new Promise((ok) => setTimeout(ok, 500));
    }
  }
}

// Compare: the input on the left of the divider, the result on the right. The slider says how much of the
// result shows (toward "after", more of it: the divider moves left); dragging across the picture puts the
// divider under the pointer; the toggle shows one or the other whole. The picture is scaled to fit the page's
// width and the window's height, up or down; the 100% links show the files pixel for pixel.
function compare(box) {
  const first = box.querySelector("img"), after = box.querySelector("img.after");
  const before = box.querySelector("img.before"), slider = document.getElementById("slider");
  const toggle = document.getElementById("toggle"), scale = document.querySelector('[data-k="scale"]');
  const fit = () => {
    const w = first.naturalWidth, h = first.naturalHeight;
    if (!w || !h) return;
    const main = getComputedStyle(box.parentElement);
    const wide = box.parentElement.clientWidth - parseFloat(main.paddingLeft) - parseFloat(main.paddingRight);
    const tall = Math.max(240, window.innerHeight - (box.getBoundingClientRect().top + window.scrollY) - 56);
    const k = Math.min(wide / w, tall / h);
    for (const img of box.querySelectorAll("img")) img.style.width = Math.floor(w * k) + "px";
    scale.textContent = w + "\u00d7" + h + " px, shown at " + Math.round(k * 100) + "% ·";
  };
  first.addEventListener("load", fit); window.addEventListener("resize", fit);
  fit();
  if (!before || !slider) return;
  const divider = box.querySelector(".divider"), tags = box.querySelectorAll(".tag");
  const cut = () => {
    const v = Number(slider.value), x = 100 - v;   // v: the share of the picture showing the after
    after.style.clipPath = "inset(0 0 0 " + x + "%)";
    divider.style.left = x + "%";
    tags[0].style.visibility = v < 100 ? "visible" : "hidden";
    tags[1].style.visibility = v > 0 ? "visible" : "hidden";
    toggle.textContent = v === 100 ? "Show the before" : "Show the after";
  };
  const drag = (e) => {
    const r = box.getBoundingClientRect();
    slider.value = Math.round(100 - 100 * Math.min(1, Math.max(0, (e.clientX - r.left) / r.width)));
    cut();
  };
  slider.addEventListener("input", cut);
  toggle.addEventListener("click", () => { slider.value = slider.value === "100" ? "0" : "100"; cut(); });
  box.addEventListener("pointerdown", (e) => { e.preventDefault(); box.setPointerCapture(e.pointerId); drag(e); });
  box.addEventListener("pointermove", (e) => { if (box.hasPointerCapture(e.pointerId)) drag(e); });
  cut();
}

document.addEventListener("DOMContentLoaded", () => {
  const t = document.querySelector("table[data-poll]"); if (t) overview(t);
  const f = document.getElementById("upload"); if (f) uploads(f);
  const c = document.getElementById("compare"); if (c) compare(c);
});
