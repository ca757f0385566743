// Import page: drop files or a zip, paste URLs, a server folder (admins), web search; live job list.
// Every action is a REST call (the session cookie authenticates); jobs are polled while any is unfinished.
(function () {
  "use strict";
  const root = document.getElementById("imports");
  if (!root) return;
  const api = root.dataset.api;
  const imagePage = (id) => root.dataset.imagePage.replace("IMAGE_ID", id);  // from the route name
  const pollMs = parseInt(root.dataset.poll, 10) || 1500;
  const errorBox = document.getElementById("import-error");
  const groupInput = document.getElementById("target-group");
  const jobsBody = document.querySelector("#jobs tbody");
  const jobsEmpty = document.getElementById("jobs-empty");
  const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
  const LABELS = { imported: "imported", near_duplicate: "near-duplicate", duplicate: "already here",
                   previously_deleted: "deleted before", rejected: "rejected" };
  let pollTimer = null;

  const { detailOf } = window.camfleet;
  const showError = (message) => window.camfleet.showError(errorBox, message);

  function group() {
    const g = groupInput.value.trim();
    if (g && !groupInput.checkValidity()) throw new Error(`group "${g}": use letters, digits, '_', '-' or '.'`);
    return g || null;
  }

  async function start(body, isForm) {
    showError("");
    let r;
    try {
      const g = group();
      if (isForm) {
        if (g) body.append("group", g);
        r = await fetch(`${api}/import`, { method: "POST", body, headers: { Accept: "application/json" } });
      } else {
        if (g) body.group = g;
        r = await fetch(`${api}/import`, { method: "POST", body: JSON.stringify(body),
          headers: { "Content-Type": "application/json", Accept: "application/json" } });
      }
    } catch (e) {
      showError(e.message);
      return null;
    }
    if (!r.ok) {
      showError(`import refused (${r.status}): ${await detailOf(r)}`);
      return null;
    }
    const job = await r.json();
    refresh();
    return job;
  }

  // ------------------------------------------------------------------ files and zips
  const drop = document.getElementById("drop-zone");
  const fileInput = document.getElementById("file-input");
  const uploadStatus = document.getElementById("upload-status");

  async function sendFiles(list) {
    const files = Array.from(list);
    if (!files.length) return;
    const zips = files.filter((f) => f.name.toLowerCase().endsWith(".zip"));
    const images = files.filter((f) => !f.name.toLowerCase().endsWith(".zip"));
    uploadStatus.textContent = `uploading ${files.length} file(s) …`;
    for (const z of zips) {
      const form = new FormData();
      form.append("file", z, z.name);
      await start(form, true);
    }
    if (images.length) {
      const form = new FormData();
      for (const f of images) form.append("files", f, f.name);
      await start(form, true);
    }
    uploadStatus.textContent = "";
    fileInput.value = "";
  }

  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    sendFiles(e.dataTransfer.files);
  });
  fileInput.addEventListener("change", () => sendFiles(fileInput.files));

  // ------------------------------------------------------------------ URLs and folders
  document.getElementById("urls-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const area = document.getElementById("urls");
    const urls = area.value.split(/\s+/).map((u) => u.trim()).filter(Boolean);
    if (!urls.length) return showError("paste at least one URL");
    if (await start({ urls }, false)) area.value = "";
  });
  const folderForm = document.getElementById("folder-form");
  if (folderForm) {
    folderForm.addEventListener("submit", (e) => {
      e.preventDefault();
      const path = document.getElementById("folder-path").value.trim();
      if (path) start({ path }, false);
    });
  }

  // ------------------------------------------------------------------ web search
  const searchForm = document.getElementById("search-form");
  if (searchForm) {
    const results = document.getElementById("search-results");
    const actions = document.getElementById("search-actions");
    let term = "";
    searchForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      showError("");
      term = document.getElementById("search-term").value.trim();
      results.textContent = "searching …";
      const r = await fetch(`${api}/search?q=${encodeURIComponent(term)}&count=40`, { headers: { Accept: "application/json" } });
      results.textContent = "";
      if (!r.ok) return showError(`search failed (${r.status}): ${await detailOf(r)}`);
      const found = await r.json();
      actions.hidden = !found.length;
      if (!found.length) results.textContent = "nothing found";
      for (const hit of found) {
        const label = document.createElement("label");
        label.title = hit.source_page;
        const box = document.createElement("input");
        box.type = "checkbox";
        box.value = hit.image_url;
        box.addEventListener("change", () => label.classList.toggle("chosen", box.checked));
        const img = document.createElement("img");
        img.src = hit.thumbnail_url;
        img.alt = hit.title;
        img.loading = "lazy";
        const caption = document.createElement("span");
        caption.textContent = hit.title || hit.image_url;
        label.append(img, box, caption);
        results.append(label);
      }
    });
    document.getElementById("search-all").addEventListener("click", () => {
      results.querySelectorAll("input[type=checkbox]").forEach((b) => { b.checked = true; b.dispatchEvent(new Event("change")); });
    });
    document.getElementById("search-import").addEventListener("click", async () => {
      const urls = Array.from(results.querySelectorAll("input:checked")).map((b) => b.value);
      if (!urls.length) return showError("tick the images to import");
      if (await start({ search: { term, urls } }, false)) {
        results.textContent = "";
        actions.hidden = true;
      }
    });
  }

  // ------------------------------------------------------------------ jobs
  function source(job) {
    const p = job.params || {};
    if (job.kind === "zip") return `zip ${p.file || ""}`;
    if (job.kind === "folder") return `folder ${p.path || ""}`;
    if (job.kind === "urls") return `${p.urls} URL(s)`;
    if (job.kind === "search") return `search "${p.term}"`;
    return `${job.total} uploaded file(s)`;
  }

  function countsText(cell, counts) {
    cell.textContent = "";
    for (const key of Object.keys(LABELS)) {
      if (!counts[key]) continue;
      const s = document.createElement("span");
      s.className = `outcome-${key}`;
      s.textContent = `${counts[key]} ${LABELS[key]}`;
      cell.append(s);
    }
  }

  function row(job) {
    const tr = document.createElement("tr");
    tr.dataset.job = job.id;
    const cells = [0, 1, 2, 3, 4, 5, 6].map(() => document.createElement("td"));
    cells[0].textContent = job.id;
    cells[1].textContent = `${source(job)}${job.target_group ? " → " + job.target_group : ""}`;
    const badge = document.createElement("span");
    badge.className = `badge ${job.status}`;
    badge.textContent = job.status;
    cells[2].append(badge);
    if (job.message) {
      const m = document.createElement("div");
      m.className = "muted";
      m.textContent = job.message;
      cells[2].append(m);
    }
    const bar = document.createElement("progress");
    bar.max = Math.max(job.total, 1);
    bar.value = job.done;
    cells[3].append(bar, ` ${job.done} / ${job.total}`);
    cells[4].className = "counts";
    countsText(cells[4], job.counts || {});
    cells[5].textContent = job.created_by;
    const show = document.createElement("button");
    show.type = "button";
    show.textContent = "files";
    show.addEventListener("click", () => openItems(job.id));
    cells[6].append(show);
    if (!FINISHED.has(job.status)) {
      const cancel = document.createElement("button");
      cancel.type = "button";
      cancel.className = "danger";
      cancel.textContent = job.cancel_requested ? "stopping …" : "cancel";
      cancel.disabled = job.cancel_requested;
      cancel.addEventListener("click", async () => {
        cancel.disabled = true;
        const r = await fetch(`/api/v1/imports/${job.id}/cancel`, { method: "POST", headers: { Accept: "application/json" } });
        if (!r.ok) showError(`cancel refused (${r.status}): ${await detailOf(r)}`);
        refresh();
      });
      cells[6].append(" ", cancel);
    }
    tr.append(...cells);
    return tr;
  }

  async function refresh() {
    clearTimeout(pollTimer);
    let jobs = [];
    try {
      const r = await fetch(`${api}/imports?limit=20`, { headers: { Accept: "application/json" } });
      if (!r.ok) throw new Error(await detailOf(r));
      jobs = await r.json();
    } catch (e) {
      showError(`cannot list imports: ${e.message}`);
    }
    jobsBody.textContent = "";
    jobs.forEach((j) => jobsBody.append(row(j)));
    jobsEmpty.hidden = jobs.length > 0;
    if (jobs.some((j) => !FINISHED.has(j.status))) pollTimer = setTimeout(refresh, pollMs);
    if (itemsJob !== null && jobs.some((j) => j.id === itemsJob && !FINISHED.has(j.status))) loadItems(true);
  }

  // ------------------------------------------------------------------ per-file results
  const itemsBox = document.getElementById("job-items");
  const itemsBody = document.getElementById("items-body");
  const itemsFilter = document.getElementById("items-filter");
  const itemsMore = document.getElementById("items-more");
  let itemsJob = null;
  let itemsAfter = 0;

  function openItems(jobId) {
    itemsJob = jobId;
    document.getElementById("items-job").textContent = jobId;
    itemsBox.hidden = false;
    loadItems(true);
  }

  async function loadItems(reset) {
    if (itemsJob === null) return;
    if (reset) { itemsAfter = 0; itemsBody.textContent = ""; }
    const q = new URLSearchParams({ limit: "200", after: String(itemsAfter) });
    if (itemsFilter.value) q.set("outcome", itemsFilter.value);
    const r = await fetch(`/api/v1/imports/${itemsJob}/items?${q}`, { headers: { Accept: "application/json" } });
    if (!r.ok) return showError(`cannot list files (${r.status}): ${await detailOf(r)}`);
    const page = await r.json();
    for (const it of page.items) {
      const tr = document.createElement("tr");
      const thumb = document.createElement("td");
      if (it.thumbnail_url) {
        const a = document.createElement("a");
        a.href = imagePage(it.image_id);
        const img = document.createElement("img");
        img.src = it.thumbnail_url;
        img.alt = "";
        img.loading = "lazy";
        a.append(img);
        thumb.append(a);
      }
      const name = document.createElement("td");
      name.textContent = it.name;
      const outcome = document.createElement("td");
      outcome.className = `outcome-${it.outcome}`;
      outcome.textContent = LABELS[it.outcome] || it.outcome;
      const why = document.createElement("td");
      why.textContent = it.reason || "";
      if (it.similar_thumbnail_url) {
        const img = document.createElement("img");
        img.src = it.similar_thumbnail_url;
        img.alt = "the similar image";
        img.title = `distance ${it.distance.toFixed(4)}`;
        why.append(" ", img);
      }
      tr.append(thumb, name, outcome, why);
      itemsBody.append(tr);
    }
    itemsAfter = page.next_after || itemsAfter;
    itemsMore.hidden = page.next_after === null;
  }

  itemsFilter.addEventListener("change", () => loadItems(true));
  itemsMore.addEventListener("click", () => loadItems(false));
  document.getElementById("items-close").addEventListener("click", () => { itemsJob = null; itemsBox.hidden = true; });

  refresh();
})();
