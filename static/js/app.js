// Page behaviour: choosing/dropping/pasting an image with a preview, and following a job until its result shows.
// An ES module loaded from 'self' only: no inline script, so a strict Content-Security-Policy holds.

const form = document.getElementById("upload-form");
if (form) setUpUpload(form);
const jobSection = document.getElementById("job");
if (jobSection) followJob(jobSection);
else if (document.querySelector("[data-viewer]")) startViewers(document);

function setUpUpload(form) {
  const input = document.getElementById("image");
  const zone = document.getElementById("dropzone");
  const preview = document.getElementById("preview");
  const chosen = document.getElementById("chosen-name");
  let previewUrl = null;

  function show(file) {
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = null;
    chosen.textContent = file ? `${file.name} · ${(file.size / 1048576).toFixed(1)} MB` : "";
    if (file && file.type.startsWith("image/")) {
      previewUrl = URL.createObjectURL(file);
      preview.src = previewUrl;
      preview.hidden = false;
    } else {
      preview.hidden = true;
      preview.removeAttribute("src");
    }
  }

  function use(file) {
    const transfer = new DataTransfer();
    transfer.items.add(file);
    input.files = transfer.files;
    show(file);
  }

  input.addEventListener("change", () => show(input.files[0]));
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => { event.preventDefault(); zone.classList.add("dragging"); });
  }
  for (const name of ["dragleave", "drop"]) {
    zone.addEventListener(name, () => zone.classList.remove("dragging"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (file) use(file);
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
  if (section.dataset.status === "done" || section.dataset.status === "failed") {
    startViewers(section);
    return;
  }
  const progress = document.getElementById("progress");
  const stage = document.getElementById("stage");

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
    section.dataset.status = view.status;
    if (view.status === "done" || view.status === "failed") {
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

async function startViewers(root) {
  if (!root.querySelector("[data-viewer]")) return;
  const viewer = await import("./viewer.js");
  viewer.initAll(root);
}
