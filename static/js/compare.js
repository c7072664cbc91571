// The comparison page: follows both jobs like app.js follows one, and shows each result's viewer once it is done.
// An ES module loaded from 'self' only (no inline script). viewer.js starts every [data-viewer], also ones added later.

// A job's final states (web/jobs/record.py); failed and cancelled carry a sentence in view.error.
const FINAL = ["done", "failed", "cancelled"];
const ENDED = ["failed", "cancelled"];
const sides = document.querySelectorAll("[data-compare-side]");
let viewerModule = null;

function loadViewer() {
  if (!viewerModule) viewerModule = import("./viewer.js");
  return viewerModule;
}

function showResult(side, view) {
  const jobUrl = view.result_url.replace(/\/result$/, "");
  side.querySelector(".progress-block")?.remove();
  if (ENDED.includes(view.status)) {
    const message = document.createElement("p");
    message.className = "error-message";
    message.setAttribute("role", "alert");
    message.textContent = view.error || "The conversion failed.";
    side.append(message);
    return;
  }
  const viewer = document.createElement("div");
  viewer.className = "viewer";
  viewer.dataset.viewer = "";
  viewer.dataset.plyUrl = view.files.ply;
  viewer.dataset.units = view.info.units;
  if (view.files.glb) viewer.dataset.meshUrl = view.files.glb;
  viewer.setAttribute("aria-label", `Interactive 3D view of the point cloud from ${side.dataset.model}`);
  const facts = document.createElement("p");
  facts.className = "facts";
  facts.append(`${view.info.point_count.toLocaleString()} points · ${view.info.units} · `);
  const link = document.createElement("a");
  link.href = jobUrl;
  link.textContent = "full result and downloads";
  facts.append(link);
  side.append(viewer, facts);
  loadViewer().then((module) => module.initAll(side));
}

function follow(side) {
  const progress = side.querySelector("progress");
  const stage = side.querySelector(".stage");

  async function poll() {
    let view;
    try {
      const response = await fetch(side.dataset.statusUrl, { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(`status ${response.status}`);
      view = await response.json();
    } catch (error) {
      if (stage) stage.textContent = "Lost contact with the server; retrying…";
      setTimeout(poll, 2000);
      return;
    }
    if (progress) progress.value = view.progress;
    const position = view.queue_position ? ` (position ${view.queue_position} in the queue)` : "";
    if (stage) stage.textContent = `${view.stage.charAt(0).toUpperCase()}${view.stage.slice(1)}${position}…`;
    side.dataset.status = view.status;
    if (FINAL.includes(view.status)) {
      showResult(side, view);
      return;
    }
    setTimeout(poll, 600);
  }
  poll();
}

for (const side of sides) {
  const status = side.dataset.status;
  if (!side.dataset.statusUrl) continue;
  if (FINAL.includes(status)) continue;
  follow(side);
}
if (document.querySelector("[data-compare-side] [data-viewer]")) loadViewer().then((module) => module.initAll(document));
