// Triage: keyboard-first review of NEW images (or restore of DELETED ones), talking to the REST API.
// Keys: 1..9 move the selection (or the image under the cursor) to group N, a (or Enter) accepts the model's
// suggestion (each image into the group it suggests), d deletes, r restores (Deleted view), arrows move the cursor
// (shift+arrow extends the selection), z undoes the last action, space toggles selection.
// Camera frames show the upload rule that sent them, the camera, and the suggestion (group + probability).
// Mouse: click = cursor, shift-click = range, ctrl/cmd-click = toggle, drag = select many.
// Actions are optimistic: the images leave the grid at once and come back with a message if the API refuses.
// The next page is fetched (and its thumbnails preloaded) before the grid runs short.
(function () {
  "use strict";
  const root = document.getElementById("triage");
  if (!root) return;
  const api = root.dataset.api;
  const imagePage = (id) => root.dataset.imagePage.replace("IMAGE_ID", id);  // from the route name
  const status = root.dataset.status;
  const deletedView = root.dataset.view === "deleted";
  const pageSize = parseInt(root.dataset.page, 10) || 60;
  const groups = JSON.parse(root.dataset.groups || "[]");
  const filter = root.dataset.filter ? `&${root.dataset.filter}` : "";
  const grid = document.getElementById("triage-grid");
  const errorBox = document.getElementById("triage-error");
  const statusLine = document.getElementById("triage-status");
  const empty = document.getElementById("triage-empty");

  let items = [];          // [{id, name, suggestion, el}] in display order
  let cursor = 0;
  let anchor = null;       // index where a shift-selection starts
  const selected = new Set();
  let lastId = 0;          // keyset cursor of the listing
  let exhausted = false;
  let loading = null;
  const undoStack = [];    // [{entryId, removed: [{item, index}]}]
  let pending = 0;
  let done = 0;

  const showError = (msg) => window.camfleet.showError(errorBox, msg, 8000);
  function setStatus() {
    const sel = selected.size ? `${selected.size} selected · ` : "";
    const busy = pending ? ` · saving ${pending}…` : "";
    statusLine.textContent = `${sel}${items.length} loaded${exhausted ? "" : "+"} · ${done} done${busy}`;
    empty.hidden = items.length > 0 || !exhausted;
  }

  function card(img) {
    const fig = document.createElement("figure");
    fig.dataset.id = img.id;
    const el = document.createElement("img");
    el.src = img.thumbnail_url;
    el.alt = img.original_name || `image ${img.id}`;
    el.width = 140; el.height = 130;
    const cap = document.createElement("figcaption");
    if (img.camera) {
      if (img.rule_text) {
        const rule = document.createElement("span");
        rule.className = `rule rule-${img.rule}`;
        rule.textContent = img.rule_text;
        cap.append(rule);
      }
      cap.append(img.camera);
      fig.dataset.rule = img.rule || "";
      fig.dataset.camera = img.camera;
      const when = img.captured_at ? ` · ${new Date(img.captured_at).toLocaleString()}` : "";
      fig.title = `camera ${img.camera}${img.rule_text ? " · sent as " + img.rule_text : ""}${when}`;
    } else {
      cap.textContent = img.original_name || `#${img.id}`;
    }
    const parts = [el, cap];
    const s = img.suggestion;
    if (s) {
      const hint = document.createElement("span");
      const pct = `${Math.round(s.probability * 100)}%`;
      hint.className = s.group ? "hint suggest" : "hint nogroup";
      hint.textContent = s.group ? `${s.group} ${pct}` : `model: ${s.label} ${pct}`;
      hint.title = s.group ? `the model suggests ${s.group} (${pct}); a accepts` : `the model says ${s.label} (${pct}): no group of that name`;
      if (s.group) fig.dataset.suggestion = s.group;
      parts.push(hint);
    }
    const info = document.createElement("a");
    info.href = imagePage(img.id); info.className = "info"; info.textContent = "info"; info.title = "details";
    info.addEventListener("mousedown", (e) => e.stopPropagation());
    parts.push(info);
    fig.append(...parts);
    return { id: img.id, name: img.original_name, suggestion: s && s.group ? s.group : null, el: fig };
  }

  async function loadMore() {
    if (exhausted) return;
    if (loading) return loading;
    loading = (async () => {
      try {
        const url = `${api}/triage?status=${status}&limit=${pageSize}&after_id=${lastId}${filter}`;
        const r = await fetch(url, { headers: { Accept: "application/json" } });
        if (!r.ok) throw new Error(await detail(r));
        const rows = await r.json();
        if (rows.length < pageSize) exhausted = true;
        const have = new Set(items.map((i) => i.id));
        for (const img of rows) {
          lastId = Math.max(lastId, img.id);
          if (have.has(img.id)) continue;
          const it = card(img);
          items.push(it);
          grid.appendChild(it.el);
          new Image().src = img.thumbnail_url; // warm the cache for thumbnails further down
        }
        render();
      } catch (e) {
        showError(`Could not load images: ${e.message}`);
      } finally {
        loading = null;
      }
    })();
    return loading;
  }

  function maybePrefetch() {
    if (!exhausted && items.length - cursor < pageSize / 2) loadMore();
  }

  const detail = window.camfleet.detailOf;

  function render() {
    if (cursor >= items.length) cursor = Math.max(0, items.length - 1);
    items.forEach((it, i) => {
      it.el.classList.toggle("cursor", i === cursor);
      it.el.classList.toggle("selected", selected.has(it.id));
    });
    setStatus();
  }

  function scrollToCursor() {
    const it = items[cursor];
    if (it) it.el.scrollIntoView({ block: "nearest" });
  }

  function targets() {
    if (selected.size) return items.filter((it) => selected.has(it.id));
    return items[cursor] ? [items[cursor]] : [];
  }

  function act(action, group) {
    const body = { action, expected_status: status };
    if (group) body.group = group;
    return send(targets(), `${api}/images/bulk`, body, `${action}${group ? " to " + group : ""}`);
  }

  function accept() {
    const chosen = targets();
    if (!chosen.length) return;
    const ready = chosen.filter((it) => it.suggestion);
    if (!ready.length) {
      showError("No suggestion naming a group here: use the number keys.");
      return;
    }
    if (ready.length < chosen.length) {
      showError(`${chosen.length - ready.length} image(s) without a suggestion naming a group were left in place.`);
    }
    return send(ready, `${api}/images/accept-suggestions`, { expected_status: status }, "accept");
  }

  async function send(chosen, url, fields, what) {
    if (!chosen.length) return;
    const removed = chosen.map((it) => ({ item: it, index: items.indexOf(it) })).sort((a, b) => a.index - b.index);
    // optimistic: take them out now
    const ids = removed.map((r) => r.item.id);
    const firstIndex = removed[0].index;
    items = items.filter((it) => !ids.includes(it.id));
    removed.forEach((r) => r.item.el.remove());
    selected.clear();
    anchor = null;
    cursor = Math.min(firstIndex, Math.max(0, items.length - 1));
    pending += ids.length;
    render();
    maybePrefetch();
    const body = { ids, ...fields };
    try {
      const r = await fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(body),
      });
      if (!r.ok) throw new Error(await detail(r));
      const entry = await r.json();
      undoStack.push({ entryId: entry.id, removed });
      done += ids.length;
    } catch (e) {
      putBack(removed);
      showError(`${what} failed, images put back: ${e.message}`);
    } finally {
      pending -= ids.length;
      render();
    }
  }

  function putBack(removed) {
    for (const r of removed) {
      const at = Math.min(r.index, items.length);
      items.splice(at, 0, r.item);
      const next = items[at + 1];
      grid.insertBefore(r.item.el, next ? next.el : null);
    }
    cursor = Math.min(removed[0].index, items.length - 1);
    render();
    scrollToCursor();
  }

  async function undo() {
    // z right after an action undoes that action: wait until its answer (and history entry) is in
    for (let waited = 0; pending > 0 && waited < 30000; waited += 50) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const last = undoStack.pop();
    if (!last) {
      showError("Nothing to undo on this page (older changes: History).");
      return;
    }
    try {
      const r = await fetch(`/api/v1/history/${last.entryId}/undo`, { method: "POST", headers: { Accept: "application/json" } });
      if (!r.ok) throw new Error(await detail(r));
      done -= last.removed.length;
      putBack(last.removed);
      last.removed.forEach((r) => selected.add(r.item.id));
      render();
    } catch (e) {
      showError(`Undo failed: ${e.message}`);
    }
  }

  function columns() {
    if (items.length < 2) return 1;
    const top = items[0].el.offsetTop;
    let n = 0;
    while (n < items.length && items[n].el.offsetTop === top) n++;
    return Math.max(1, n);
  }

  function moveCursor(delta, extend) {
    if (!items.length) return;
    const next = Math.max(0, Math.min(items.length - 1, cursor + delta));
    if (extend) {
      if (anchor === null) anchor = cursor;
      selectRange(anchor, next);
    } else {
      anchor = null;
    }
    cursor = next;
    render();
    scrollToCursor();
    maybePrefetch();
  }

  function selectRange(a, b) {
    selected.clear();
    const [lo, hi] = a < b ? [a, b] : [b, a];
    for (let i = lo; i <= hi; i++) selected.add(items[i].id);
  }

  document.addEventListener("keydown", (e) => {
    if (e.target.closest("input, select, textarea")) return;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const k = e.key;
    if (!deletedView && k >= "1" && k <= "9") {
      const g = groups[parseInt(k, 10) - 1];
      if (g) { act("move", g); e.preventDefault(); }
    } else if (!deletedView && (k === "a" || (k === "Enter" && !e.target.closest("button, a")))) { accept(); e.preventDefault(); }
    else if (!deletedView && (k === "d" || k === "Delete")) { act("delete"); e.preventDefault(); }
    else if (deletedView && k === "r") { act("restore"); e.preventDefault(); }
    else if (k === "z") { undo(); e.preventDefault(); }
    else if (k === "ArrowRight") { moveCursor(1, e.shiftKey); e.preventDefault(); }
    else if (k === "ArrowLeft") { moveCursor(-1, e.shiftKey); e.preventDefault(); }
    else if (k === "ArrowDown") { moveCursor(columns(), e.shiftKey); e.preventDefault(); }
    else if (k === "ArrowUp") { moveCursor(-columns(), e.shiftKey); e.preventDefault(); }
    else if (k === " ") {
      const it = items[cursor];
      if (it) { selected.has(it.id) ? selected.delete(it.id) : selected.add(it.id); render(); }
      e.preventDefault();
    } else if (k === "Escape") { selected.clear(); anchor = null; render(); }
  });

  // mouse: click, shift-click range, ctrl-click toggle, drag to select many
  let dragging = false;
  let dragStart = null;
  grid.addEventListener("mousedown", (e) => {
    const fig = e.target.closest("figure");
    if (!fig || e.button !== 0) return;
    e.preventDefault();
    root.focus();
    const i = items.findIndex((it) => it.el === fig);
    if (i < 0) return;
    if (e.shiftKey) {
      if (anchor === null) anchor = cursor;
      selectRange(anchor, i);
    } else if (e.ctrlKey || e.metaKey) {
      const id = items[i].id;
      selected.has(id) ? selected.delete(id) : selected.add(id);
      anchor = i;
    } else {
      selected.clear();
      anchor = i;
      dragging = true;
      dragStart = i;
    }
    cursor = i;
    render();
    maybePrefetch();
  });
  grid.addEventListener("mouseover", (e) => {
    if (!dragging) return;
    const fig = e.target.closest("figure");
    const i = fig ? items.findIndex((it) => it.el === fig) : -1;
    if (i < 0 || i === dragStart && selected.size === 0) return;
    selectRange(dragStart, i);
    cursor = i;
    render();
  });
  document.addEventListener("mouseup", () => { dragging = false; });

  const moveBtn = document.getElementById("move-selected");
  if (moveBtn) moveBtn.addEventListener("click", () => act("move", document.getElementById("move-target").value));
  const acceptBtn = document.getElementById("accept-selected");
  if (acceptBtn) acceptBtn.addEventListener("click", () => accept());
  const delBtn = document.getElementById("delete-selected");
  if (delBtn) delBtn.addEventListener("click", () => act("delete"));
  const restoreBtn = document.getElementById("restore-selected");
  if (restoreBtn) restoreBtn.addEventListener("click", () => act("restore"));
  window.addEventListener("scroll", () => {
    if (window.innerHeight + window.scrollY > document.body.offsetHeight - 600) loadMore();
  });

  root.focus();
  loadMore().then(() => { if (!exhausted) loadMore(); });
})();
