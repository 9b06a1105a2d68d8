// reverser dashboard: color points on a colorize result. Click the picture to add a point (its color starts at
// the color the picture has there), drag a point to move it, remove it from the list; the picture re-colors
// at working size as you go (POST /api/files/{id}/preview), and Apply colors the full-size file again as a new
// file (POST /api/files/{id}/hints). No libraries, nothing from outside.
"use strict";

function colorPoints(root) {
  const id = root.dataset.id, live = root.querySelector("img.live"), stage = root.querySelector(".stage");
  const list = root.querySelector("ol.plist"), apply = root.querySelector("button.apply");
  const clear = root.querySelector("button.clear"), said = root.querySelector(".said");
  const token = document.querySelector('meta[name="csrf"]').content;
  const points = [];          // {x, y, color, el}: x and y in 0..1 of the picture
  const canvas = document.createElement("canvas");
  let pending = null, inflight = false, again = false, shown = null;

  const post = (url, body) => fetch(url, {method: "POST", body, credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": token}});
  const body = () => JSON.stringify({points: points.map((p) => ({x: p.x, y: p.y, color: p.color}))});

  // One preview in flight at a time; changes made meanwhile are sent once it answers.
  async function render() {
    if (inflight) { again = true; return; }
    inflight = true; root.dataset.state = "rendering";
    try {
      const r = await post("/api/files/" + encodeURIComponent(id) + "/preview", points.length ? body() : "");
      if (!r.ok) { said.textContent = "preview refused: " + ((await r.json().catch(() => ({}))).error || r.status); return; }
      const url = URL.createObjectURL(await r.blob());
      await new Promise((ok) => { live.onload = ok; live.onerror = ok; live.src = url; });
      if (shown) URL.revokeObjectURL(shown);
      shown = url;
      fit();
      const ms = (r.headers.get("Server-Timing") || "").split(",")
        .reduce((sum, part) => sum + (parseFloat(part.split("dur=")[1]) || 0), 0);
      said.textContent = (points.length ? points.length + " point" + (points.length > 1 ? "s" : "")
        : "the automatic colors") + " · re-colored in " + Math.round(ms) + " ms";
    } finally {
      inflight = false;
      if (again) { again = false; render(); } else if (pending === null) root.dataset.state = "ready";
    }
  }
  // The working-size picture shown as large as fits: 640 px wide at most, and within the window's height.
  const fit = () => {
    const w = live.naturalWidth, h = live.naturalHeight;
    if (w && h) live.style.width = Math.floor(w * Math.min(640 / w, 0.8 * window.innerHeight / h, 6)) + "px";
  };
  window.addEventListener("resize", fit);
  // A change re-renders 120 ms after the last one; "ready" means every change so far is in the picture.
  const soon = () => {
    clearTimeout(pending);
    root.dataset.state = "changed";
    pending = setTimeout(() => { pending = null; render(); }, 120);
    apply.disabled = !points.length;
  };

  // The color the live picture has at (x, y): where a new point's picker starts.
  function colorAt(x, y) {
    canvas.width = live.naturalWidth; canvas.height = live.naturalHeight;
    const g = canvas.getContext("2d", {willReadFrequently: true});
    g.drawImage(live, 0, 0);
    const d = g.getImageData(Math.min(canvas.width - 1, Math.floor(x * canvas.width)),
                             Math.min(canvas.height - 1, Math.floor(y * canvas.height)), 1, 1).data;
    return "#" + [d[0], d[1], d[2]].map((v) => v.toString(16).padStart(2, "0")).join("");
  }

  const where = (e) => {
    const r = live.getBoundingClientRect();
    return [Math.min(1, Math.max(0, (e.clientX - r.left) / r.width)), Math.min(1, Math.max(0, (e.clientY - r.top) / r.height))];
  };

  function place(p) {
    p.el.style.left = (p.x * 100) + "%"; p.el.style.top = (p.y * 100) + "%"; p.el.style.background = p.color;
  }

  function add(x, y) {
    const p = {x, y, color: colorAt(x, y), el: document.createElement("span")};
    p.el.className = "pt"; p.el.title = "drag to move";
    const row = document.createElement("li"), pick = document.createElement("input"), drop = document.createElement("button");
    pick.type = "color"; pick.value = p.color; pick.setAttribute("aria-label", "the point's color");
    drop.type = "button"; drop.textContent = "remove";
    row.append(pick, " ", drop); list.append(row);
    pick.addEventListener("input", () => { p.color = pick.value; place(p); soon(); });
    drop.addEventListener("click", () => { points.splice(points.indexOf(p), 1); p.el.remove(); row.remove(); soon(); });
    p.el.addEventListener("pointerdown", (e) => { e.stopPropagation(); e.preventDefault(); p.el.setPointerCapture(e.pointerId); });
    p.el.addEventListener("pointermove", (e) => {
      if (!p.el.hasPointerCapture(e.pointerId)) return;
      [p.x, p.y] = where(e); place(p); soon();
    });
    stage.append(p.el); points.push(p); place(p);
    return pick;
  }

  stage.addEventListener("pointerdown", (e) => {
    if (e.target !== live || !live.naturalWidth) return;
    e.preventDefault();   // the new point's picker keeps the focus
    const [x, y] = where(e);
    add(x, y).focus();
    soon();
  });
  clear.addEventListener("click", () => { for (const p of points.splice(0)) p.el.remove(); list.replaceChildren(); soon(); });

  apply.addEventListener("click", async () => {
    apply.disabled = true; said.textContent = "coloring the full-size picture again…";
    const r = await post("/api/files/" + encodeURIComponent(id) + "/hints", body());
    const got = await r.json().catch(() => ({}));
    if (r.status !== 202) { said.textContent = "refused: " + (got.error || r.status); apply.disabled = false; return; }
    for (;;) {
      const s = await fetch(got.url, {credentials: "same-origin"}).then((x) => x.json()).catch(() => null);
      if (s && s.state === "done") {
        const a = document.createElement("a");
        a.href = "/results/" + got.id; a.className = "applied"; a.textContent = s.result_name;
        said.replaceChildren("Applied: ", a, " (a new file; this one stays as it was)");
        apply.disabled = false; return;
      }
      if (s && (s.state === "failed" || s.state === "unknown")) { said.textContent = "failed: " + s.reason; apply.disabled = false; return; }
      await new Promise((ok) => setTimeout(ok, 400));
    }
  });

  apply.disabled = true;
  render();
}

document.addEventListener("DOMContentLoaded", () => {
  const p = document.getElementById("points"); if (p) colorPoints(p);
});
