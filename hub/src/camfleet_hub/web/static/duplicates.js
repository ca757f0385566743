// Duplicates page: near-duplicate pairs side by side with their distance; one click keeps one and deletes the other.
(function () {
  "use strict";
  const root = document.getElementById("duplicates");
  if (!root) return;
  const api = root.dataset.api;
  const imagePage = (id) => root.dataset.imagePage.replace("IMAGE_ID", id);  // from the route name
  const box = document.getElementById("dup-pairs");
  const summary = document.getElementById("dup-summary");
  const more = document.getElementById("dup-more");
  const errorBox = document.getElementById("dup-error");
  const PAGE = 30;
  let offset = 0;

  const { detailOf } = window.camfleet;
  const showError = (message) => window.camfleet.showError(errorBox, message);

  function side(img) {
    const fig = document.createElement("figure");
    const a = document.createElement("a");
    a.href = imagePage(img.id);
    const pic = document.createElement("img");
    pic.src = img.thumbnail_url;
    pic.alt = img.original_name || `image ${img.id}`;
    a.append(pic);
    const cap = document.createElement("figcaption");
    cap.textContent = `#${img.id} · ${img.status}${img.group ? " in " + img.group : ""} · ${img.width}×${img.height} · ` +
      `${Math.round(img.size / 1024)} KB · ${img.source}${img.original_name ? " · " + img.original_name : ""}`;
    fig.append(a, cap);
    return fig;
  }

  function pairRow(pair) {
    const div = document.createElement("div");
    div.className = "dup-pair";
    div.dataset.left = pair.left.id;
    div.dataset.right = pair.right.id;
    const middle = document.createElement("div");
    middle.className = "middle";
    const d = document.createElement("div");
    d.className = "distance";
    d.textContent = pair.distance.toFixed(4);
    const kind = document.createElement("div");
    kind.className = "muted";
    kind.textContent = pair.kind === "exact" ? "same pixels" : "near-duplicate";
    const keepLeft = document.createElement("button");
    keepLeft.type = "button";
    keepLeft.className = "keep-left";
    keepLeft.textContent = "◀ keep left";
    const keepRight = document.createElement("button");
    keepRight.type = "button";
    keepRight.className = "keep-right";
    keepRight.textContent = "keep right ▶";
    keepLeft.addEventListener("click", () => resolve(div, pair.left.id, pair.right.id));
    keepRight.addEventListener("click", () => resolve(div, pair.right.id, pair.left.id));
    middle.append(d, kind, keepLeft, document.createElement("br"), keepRight);
    div.append(side(pair.left), middle, side(pair.right));
    return div;
  }

  async function resolve(div, keep, drop) {
    showError("");
    div.querySelectorAll("button").forEach((b) => { b.disabled = true; });
    const r = await fetch(`${api}/duplicates/resolve`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ keep, drop: [drop] }),
    });
    if (!r.ok) {
      div.querySelectorAll("button").forEach((b) => { b.disabled = false; });
      return showError(`not resolved (${r.status}): ${await detailOf(r)}`);
    }
    // the dropped image is gone from every pair it was part of
    box.querySelectorAll(".dup-pair").forEach((p) => {
      if (p.dataset.left === String(drop) || p.dataset.right === String(drop)) p.remove();
    });
    if (!box.querySelector(".dup-pair")) load(true);
  }

  async function load(reset) {
    if (reset) { offset = 0; box.textContent = ""; }
    const r = await fetch(`${api}/duplicates?limit=${PAGE}&offset=${offset}`, { headers: { Accept: "application/json" } });
    if (!r.ok) return showError(`cannot list duplicates (${r.status}): ${await detailOf(r)}`);
    const page = await r.json();
    if (!page.embedded) {
      summary.textContent = "No embedding model yet: upload the ImageNet default model (or train once) to find near-duplicates.";
    } else {
      summary.textContent = `${page.total} pair(s) under ${page.max_equal_distance}`;
    }
    if (!page.pairs.length && reset) {
      const p = document.createElement("p");
      p.className = "empty";
      p.id = "dup-none";
      p.textContent = "No duplicates.";
      box.append(p);
    }
    page.pairs.forEach((pair) => box.append(pairRow(pair)));
    offset += page.pairs.length;
    more.hidden = offset >= page.total;
  }

  document.getElementById("threshold-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    showError("");
    const value = parseFloat(document.getElementById("threshold").value);
    const r = await fetch(`${api}/duplicates`, {
      method: "PATCH",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ max_equal_distance: value }),
    });
    if (!r.ok) return showError(`not set (${r.status}): ${await detailOf(r)}`);
    load(true);
  });
  more.addEventListener("click", () => load(false));
  load(true);
})();
