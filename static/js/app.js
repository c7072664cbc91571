// Page behaviour: choosing/dropping/pasting an image or a video with a preview, and following a job until its result
// shows (a video's job: frames done, speed, time left, and Cancel).
// An ES module loaded from 'self' only: no inline script, so a strict Content-Security-Policy holds.

// A job's final states (web/jobs/record.py); failed and cancelled carry a sentence in view.error.
const FINAL = ["done", "failed", "cancelled"];
const ENDED = ["failed", "cancelled"];
const form = document.getElementById("upload-form");
if (form) setUpUpload(form);
const jobSection = document.getElementById("job");
const batchSection = document.getElementById("batch");
if (jobSection) followJob(jobSection);
else if (batchSection) followBatch(batchSection);
else if (document.querySelector("[data-viewer], [data-player4d]")) startViewers(document);

function setUpUpload(form) {
  const input = document.getElementById("image");
  const zone = document.getElementById("dropzone");
  const preview = document.getElementById("preview");
  const videoPreview = document.getElementById("video-preview");
  const videoOptions = document.getElementById("video-options");
  const chosen = document.getElementById("chosen-name");
  let previewUrl = null;

  function show(file, count = 1) {
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = null;
    const video = count === 1 && file?.type.startsWith("video/");
    chosen.textContent = !file ? "" : count > 1 ? `${count} files: a batch, one result each`
      : `${file.name} · ${(file.size / 1048576).toFixed(1)} MB${video ? " · a video: see the video options" : ""}`;
    preview.hidden = true;
    preview.removeAttribute("src");
    if (videoPreview) {
      videoPreview.hidden = true;
      videoPreview.removeAttribute("src");
      videoPreview.load(); // let go of the last one
    }
    if (file && file.type.startsWith("image/")) {
      previewUrl = URL.createObjectURL(file);
      preview.src = previewUrl;
      preview.hidden = false;
    } else if (video && videoPreview) {
      // The server tells a video by its content; the browser's type only chooses the preview.
      previewUrl = URL.createObjectURL(file);
      videoPreview.src = previewUrl;
      videoPreview.hidden = false;
    }
    if (video && videoOptions) videoOptions.open = true;
  }

  function use(...files) {
    const transfer = new DataTransfer();
    for (const file of files) transfer.items.add(file);
    input.files = transfer.files;
    show(files[0], files.length);
  }

  input.addEventListener("change", () => show(input.files[0], input.files.length));
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => { event.preventDefault(); zone.classList.add("dragging"); });
  }
  for (const name of ["dragleave", "drop"]) {
    zone.addEventListener(name, () => zone.classList.remove("dragging"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    const files = [...event.dataTransfer.files];
    if (files.length) use(...files);
  });
  document.addEventListener("paste", (event) => {
    const item = [...(event.clipboardData?.items || [])].find((entry) => entry.type.startsWith("image/"));
    if (!item) return;
    const blob = item.getAsFile();
    const extension = blob.type.split("/")[1] || "png";
    use(new File([blob], `pasted.${extension}`, { type: blob.type }));
  });
  form.addEventListener("submit", () => {
    const button = document.getElementById("submit");
    button.disabled = true;
    button.textContent = "Uploading…";
  });
}

function followJob(section) {
  if (FINAL.includes(section.dataset.status)) {
    startViewers(section);
    return;
  }
  const progress = document.getElementById("progress");
  const stage = document.getElementById("stage");
  const isVideo = document.getElementById("progress-block")?.dataset.kind === "video";

  async function poll() {
    let view;
    try {
      const response = await fetch(section.dataset.statusUrl, { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(`status ${response.status}`);
      view = await response.json();
    } catch (error) {
      stage.textContent = "Lost contact with the server; retrying…";
      setTimeout(poll, 2000);
      return;
    }
    progress.value = view.progress;
    const position = view.queue_position ? ` (position ${view.queue_position} in the queue)` : "";
    stage.textContent = `${view.stage.charAt(0).toUpperCase()}${view.stage.slice(1)}${position}…`;
    if (isVideo) showVideoProgress(view);
    section.dataset.status = view.status;
    if (FINAL.includes(view.status)) {
      const response = await fetch(section.dataset.resultUrl);
      section.innerHTML = await response.text();
      startViewers(section);
      section.dispatchEvent(new CustomEvent("job:finished", { detail: view, bubbles: true }));
      return;
    }
    setTimeout(poll, 600);
  }
  poll();
}

// A video's counters (templates/_video_running.html): frames done of expected, speed, time left; Cancel gives way
// to "Cancelling…" once the job was asked to stop (it stops at its next frame).
function showVideoProgress(view) {
  const counts = view.video;
  const frames = document.getElementById("frames-done");
  if (counts) {
    frames.dataset.frames = counts.frames;
    frames.dataset.expected = counts.expected ?? "";
    const done = counts.frames.toLocaleString("en");
    frames.textContent = counts.expected ? `${done} of ${counts.expected.toLocaleString("en")}` : done;
    const speed = counts.fps < 10 ? Number(counts.fps.toPrecision(2)) : Math.round(counts.fps);
    document.getElementById("frames-per-second").textContent = counts.fps > 0 ? `${speed} frames per second`
      : "measuring…";
    document.getElementById("time-left").textContent = counts.seconds_left == null ? "estimating…"
      : `about ${duration(counts.seconds_left)}`;
  }
  if (view.cancel_requested) {
    document.getElementById("cancelling").hidden = false;
    const form = document.getElementById("cancel-form");
    if (form) form.hidden = true;
  }
}

// Seconds for people, as the server's "duration" filter words them (web/routes/pages.py).
function duration(seconds) {
  const whole = Math.max(0, Math.ceil(seconds));
  if (whole < 60) return `${whole} s`;
  if (whole < 3600) return whole % 60 ? `${Math.floor(whole / 60)} min ${whole % 60} s` : `${whole / 60} min`;
  const minutes = Math.floor(whole / 60) % 60, hours = Math.floor(whole / 3600);
  return minutes ? `${hours} h ${minutes} min` : `${hours} h`;
}

// A batch: one request for all its jobs' states, each row updated in place; the zip link opens when all are done.
function followBatch(section) {
  if (section.dataset.status === "done") return;
  async function poll() {
    let batch;
    try {
      const response = await fetch(section.dataset.batchUrl, { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(`status ${response.status}`);
      batch = await response.json();
    } catch (error) {
      setTimeout(poll, 2000);
      return;
    }
    for (const view of batch.views) {
      const row = section.querySelector(`[data-job-id="${view.id}"]`);
      if (!row) continue;
      row.dataset.status = view.status;
      const bar = row.querySelector("progress");
      if (bar && view.progress !== undefined) bar.value = view.progress;
      const stage = row.querySelector(".batch-stage");
      if (stage) stage.textContent = ENDED.includes(view.status) ? view.error : view.stage || view.status;
      if (view.status === "done" && !row.querySelector("img") && view.files?.input) {
        const thumb = document.createElement("img");
        thumb.className = "batch-thumb";
        thumb.alt = `Image ${row.querySelector(".batch-number").textContent}`;
        thumb.src = view.files.input;
        row.querySelector(".batch-number").after(thumb);
      }
    }
    section.dataset.status = batch.status;
    if (batch.status === "done") {
      const link = document.getElementById("batch-download");
      link.removeAttribute("aria-disabled");
      link.classList.remove("disabled");
      section.dispatchEvent(new CustomEvent("batch:finished", { detail: batch, bubbles: true }));
      return;
    }
    setTimeout(poll, 800);
  }
  poll();
}

// True scale: two measured points of the view and their real distance become a rebuild with a known length. The
// points are projected back to the pixels they came from (the inverse of the back-projection in the README), in
// the uploaded file's pixels, which is what the server's known_length takes.
function setUpScaleForm(root) {
  const form = root.querySelector("#scale-form");
  if (!form) return;
  const metres = form.querySelector("#scale-metres");
  const button = form.querySelector("#set-scale");
  let pixels = null;
  const d = form.dataset;
  const number = (name) => Number(d[name]);

  function toFilePixel([x, y, z]) {
    let u, v;
    if (d.mode === "relief") {
      const f = number("scaleFactor"), w = number("width"), h = number("height");
      u = (x / f + 0.5) * w - 0.5;
      v = (h / (2 * w) - y / f) * w - 0.5;
    } else {
      u = number("fx") * x / -z + number("cx");
      v = number("cy") - number("fy") * y / -z;
    }
    const s = number("imageScale");
    return [(u + 0.5) / s - 0.5, (v + 0.5) / s - 0.5].map((value) => Number(value.toFixed(3)));
  }

  root.addEventListener("viewer:measure", (event) => {
    pixels = [toFilePixel(event.detail.a), toFilePixel(event.detail.b)];
    metres.disabled = false;
    button.disabled = false;
    form.dataset.pixels = pixels.flat().join(" ");
    metres.focus();
  });
  form.addEventListener("submit", (event) => {
    if (!pixels || !(Number(metres.value) > 0)) {
      event.preventDefault();
      return;
    }
    form.querySelector("#known-length").value = `${pixels.flat().join(" ")} ${metres.value}`;
    button.disabled = true;
  });
}

async function startViewers(root) {
  setUpScaleForm(root);
  if (root.querySelector("[data-player4d]")) {
    const player = await import("./player4d.js");
    player.initAll(root);
  }
  if (!root.querySelector("[data-viewer]")) return;
  const viewer = await import("./viewer.js");
  viewer.initAll(root);
}
