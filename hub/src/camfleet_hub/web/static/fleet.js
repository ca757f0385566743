// Camera page: drag on the snapshot to draw a rectangle region for the classifier chosen under "draw"; the
// normalised x0,y0,x1,y1 goes into that classifier's region field (and "run" is ticked).
(function () {
  "use strict";
  const img = document.getElementById("snapshot");
  const box = document.getElementById("region-box");
  if (!(img instanceof HTMLImageElement) || !box) return;
  let start = null;
  const clamp = (v) => Math.min(1, Math.max(0, v));
  const point = (ev) => {
    const r = img.getBoundingClientRect();
    return { x: clamp((ev.clientX - r.left) / r.width), y: clamp((ev.clientY - r.top) / r.height) };
  };
  const show = (a, b) => {
    const w = img.clientWidth, h = img.clientHeight;
    box.hidden = false;
    box.style.left = Math.min(a.x, b.x) * w + "px";
    box.style.top = Math.min(a.y, b.y) * h + "px";
    box.style.width = Math.abs(b.x - a.x) * w + "px";
    box.style.height = Math.abs(b.y - a.y) * h + "px";
  };
  img.addEventListener("dragstart", (ev) => ev.preventDefault());
  img.addEventListener("pointerdown", (ev) => { start = point(ev); img.setPointerCapture(ev.pointerId); });
  img.addEventListener("pointermove", (ev) => { if (start) show(start, point(ev)); });
  img.addEventListener("pointerup", (ev) => {
    if (!start) return;
    const end = point(ev);
    const [x0, x1] = [Math.min(start.x, end.x), Math.max(start.x, end.x)];
    const [y0, y1] = [Math.min(start.y, end.y), Math.max(start.y, end.y)];
    start = null;
    if (x1 - x0 < 0.01 || y1 - y0 < 0.01) return;
    const chosen = document.querySelector('input[name="draw"]:checked');
    if (!chosen) return;
    const field = document.querySelector(`input[name="region_${chosen.value}"]`);
    const run = document.querySelector(`input[name="clf_${chosen.value}"]`);
    if (field) field.value = [x0, y0, x1, y1].map((v) => v.toFixed(3)).join(",");
    if (run) run.checked = true;
  });
})();
