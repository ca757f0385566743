// Try it: an uploaded, pasted, dropped, webcam or drawn image → the page's data-classify URL → top-5 bars and the anomaly
// flag; "Add to dataset" sends the same image to the chosen classifier's REST import (NEW or a group).
(function () {
  "use strict";
  const root = document.getElementById("try");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const target = $("try-target"), drop = $("try-drop"), file = $("try-file");
  const canvas = $("try-canvas"), ctx = canvas.getContext("2d"), video = $("try-video");
  const addForm = $("try-add"), addGroup = $("try-add-group"), addStatus = $("try-add-status");
  let current = null; // {blob, name}

  const showError = (text) => window.camfleet.showError($("try-error"), text);

  function clearCanvas() { ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height); }
  clearCanvas();

  function updateAdd() {
    const opt = target.selectedOptions[0];
    const can = current && opt && opt.value && opt.dataset.canLabel === "1";
    addForm.hidden = !can;
    addGroup.replaceChildren(new Option("NEW (triage)", ""));
    if (opt && opt.dataset.groups) opt.dataset.groups.split("\n").filter(Boolean).forEach((g) => addGroup.add(new Option(g, g)));
    addStatus.textContent = "";
  }

  function render(answer) {
    const m = answer.model;
    $("try-model").textContent = (m.default ? "ImageNet default" : m.classifier) + " v" + m.version;
    const list = $("try-results");
    list.replaceChildren();
    for (const p of answer.top) {
      const li = document.createElement("li");
      const name = document.createElement("span"); name.className = "name"; name.textContent = p.label;
      const track = document.createElement("span");
      const bar = document.createElement("span"); bar.className = "bar"; bar.style.width = (p.probability * 100).toFixed(1) + "%";
      bar.style.display = "block"; track.appendChild(bar);
      const pct = document.createElement("span"); pct.className = "pct"; pct.textContent = (p.probability * 100).toFixed(1) + " %";
      li.append(name, track, pct); list.appendChild(li);
    }
    const an = $("try-anomaly");
    an.className = answer.anomaly ? "anomalous" : "normal";
    an.textContent = (answer.anomaly ? "Anomalous" : "Not anomalous") + ": score " + answer.anomaly_score.toFixed(2) +
      (answer.anomaly ? " above" : " not above") + " the threshold " + answer.threshold.toFixed(2) + ".";
  }

  async function classify() {
    if (!current) return;
    showError("");
    const prev = $("try-preview");
    if (prev.dataset.url) URL.revokeObjectURL(prev.dataset.url);
    prev.dataset.url = URL.createObjectURL(current.blob); prev.src = prev.dataset.url; prev.hidden = false;
    const body = new FormData();
    body.append("file", current.blob, current.name);
    body.append("target", target.value);
    $("try-results").replaceChildren(); $("try-anomaly").textContent = ""; $("try-model").textContent = "…";
    try {
      const r = await window.camfleet.requestJSON(root.dataset.classify, { method: "POST", body });
      if (!r.ok) { $("try-model").textContent = ""; showError(r.detail); return; }
      render(r.data);
    } catch (e) { showError(String(e)); }
    updateAdd();
  }

  function use(blob, name) { current = { blob, name }; classify(); }

  file.addEventListener("change", () => { if (file.files[0]) use(file.files[0], file.files[0].name); });
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    const f = [...(e.dataTransfer?.files || [])].find((x) => x.type.startsWith("image/"));
    if (f) use(f, f.name); else showError("drop an image file");
  });
  document.addEventListener("paste", (e) => {
    const item = [...(e.clipboardData?.items || [])].find((x) => x.type.startsWith("image/"));
    if (item) { const f = item.getAsFile(); if (f) use(f, f.name || "pasted.png"); }
  });
  target.addEventListener("change", () => { if (current) classify(); else updateAdd(); });

  // Drawing: pointer strokes on a white canvas (mouse, pen or finger).
  let drawing = false;
  const at = (e) => { const r = canvas.getBoundingClientRect(); return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height]; };
  canvas.addEventListener("pointerdown", (e) => { drawing = true; canvas.setPointerCapture(e.pointerId); ctx.beginPath(); ctx.moveTo(...at(e)); });
  canvas.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    ctx.lineWidth = 10; ctx.lineCap = "round"; ctx.lineJoin = "round"; ctx.strokeStyle = "#111";
    ctx.lineTo(...at(e)); ctx.stroke();
  });
  ["pointerup", "pointercancel"].forEach((t) => canvas.addEventListener(t, () => { drawing = false; }));
  $("try-draw-clear").addEventListener("click", clearCanvas);
  $("try-draw-use").addEventListener("click", () => canvas.toBlob((b) => b && use(b, "drawing.png"), "image/png"));

  // Webcam: a live preview, and a still taken from it.
  $("try-camera-start").addEventListener("click", async () => {
    if (!navigator.mediaDevices?.getUserMedia) { showError("this browser gives no camera here (it needs https or localhost)"); return; }
    try {
      video.srcObject = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
      video.hidden = false; await video.play(); $("try-camera-shot").hidden = false;
    } catch (e) { showError("camera: " + (e.message || e)); }
  });
  $("try-camera-shot").addEventListener("click", () => {
    const still = document.createElement("canvas");
    still.width = video.videoWidth; still.height = video.videoHeight;
    still.getContext("2d").drawImage(video, 0, 0);
    still.toBlob((b) => b && use(b, "webcam.jpg"), "image/jpeg", 0.92);
  });

  addForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const opt = target.selectedOptions[0];
    if (!current || !opt || !opt.dataset.import) return;
    const body = new FormData();
    body.append("files", current.blob, current.name);
    if (addGroup.value) body.append("group", addGroup.value);
    addStatus.textContent = "adding…";
    const r = await window.camfleet.requestJSON(opt.dataset.import + "?wait=true", { method: "POST", body });
    if (!r.ok) { addStatus.textContent = ""; showError(r.detail); return; }
    const data = r.data;
    addStatus.textContent = "added: import job #" + data.id + " (" + (data.status || data.state || "") + ")";
  });
  updateAdd();
})();
