// Outliers: one key per change through the REST bulk route (one history entry each; z undoes the last).
// j/k or arrows choose a row, m moves it to the chosen group (the nearest other group by default), d deletes it.
(function () {
  "use strict";
  const table = document.getElementById("outliers");
  if (!table) return;
  const api = table.dataset.api, canLabel = table.dataset.canLabel === "1";
  const rows = [...table.querySelectorAll("tr.outlier")];
  const errorBox = document.getElementById("outliers-error"), status = document.getElementById("outliers-status");
  let at = 0;

  const show = (text) => window.camfleet.showError(errorBox, text);
  function select(i) {
    if (!rows.length) return;
    at = Math.max(0, Math.min(rows.length - 1, i));
    rows.forEach((r, j) => r.classList.toggle("current", j === at));
    rows[at].scrollIntoView({ block: "nearest" });
  }
  async function post(path, body) {
    const r = await window.camfleet.requestJSON(api + path, { method: "POST", json: body || undefined });
    if (!r.ok) { show(r.detail); return null; }
    show(""); return r.data;
  }
  async function act(row, action) {
    const id = Number(row.dataset.imageId);
    const body = { ids: [id], action };
    if (action === "move") body.group = row.querySelector("select.move-target").value;
    const done = await post("/images/bulk", body);
    if (!done) return;
    row.classList.add("done");
    row.querySelector("td.group").textContent = action === "move" ? body.group : "deleted";
    status.textContent = (action === "move" ? "moved #" + id + " to " + body.group : "deleted #" + id) + " (z undoes)";
    select(rows.indexOf(row) + 1);
  }
  rows.forEach((row, i) => {
    row.addEventListener("click", () => select(i));
    row.querySelector("button.move")?.addEventListener("click", () => act(row, "move"));
    row.querySelector("button.delete")?.addEventListener("click", () => act(row, "delete"));
  });
  document.addEventListener("keydown", async (e) => {
    if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "j" || e.key === "ArrowDown") { select(at + 1); e.preventDefault(); }
    else if (e.key === "k" || e.key === "ArrowUp") { select(at - 1); e.preventDefault(); }
    else if (canLabel && e.key === "m") act(rows[at], "move");
    else if (canLabel && e.key === "d") act(rows[at], "delete");
    else if (canLabel && e.key === "z") {
      const undone = await post("/undo");
      if (undone) { status.textContent = "undone: " + (undone.summary || undone.action || "last change") + " (reload to see it)"; }
    }
  });
  select(0);
})();
