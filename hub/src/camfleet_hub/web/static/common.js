// The helpers every page script uses (window.camfleet), so no page keeps its own copy: an error line that shows or
// hides itself, the reason of a refused request, and a JSON call to the REST API. csrf.js (loaded first) adds the
// CSRF header to every state-changing fetch, so these calls carry it too.
(function () {
  "use strict";

  // `message` shown in `box` (hidden when empty); `hideAfterMs` hides it again later (Triage's transient notes).
  function showError(box, message, hideAfterMs) {
    box.textContent = message || "";
    box.hidden = !message;
    clearTimeout(box.camfleetTimer);
    if (message && hideAfterMs) box.camfleetTimer = setTimeout(() => { box.hidden = true; }, hideAfterMs);
  }

  // The hub's refusals are {"detail": "..."} (validation errors: a list, shown as JSON); anything else: the status.
  function describe(data, r) {
    if (data && data.detail !== undefined) return typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail);
    return `${r.status} ${r.statusText}`.trim();
  }

  async function detailOf(r) {
    return describe(await r.json().catch(() => null), r);
  }

  // fetch + JSON both ways: `json` is sent as the body, `body` (FormData, Blob) as is; the answer is read once.
  // Returns { ok, status, data, detail } (detail: the refusal's reason, "" when ok); network errors throw.
  async function requestJSON(url, options) {
    const opts = options || {};
    const headers = new Headers(opts.headers || {});
    headers.set("Accept", "application/json");
    const init = { method: opts.method || "GET", headers };
    if (opts.cache) init.cache = opts.cache;
    if (opts.json !== undefined) {
      headers.set("Content-Type", "application/json");
      init.body = JSON.stringify(opts.json);
    } else if (opts.body !== undefined) {
      init.body = opts.body;
    }
    const r = await fetch(url, init);
    const data = await r.json().catch(() => null);
    return { ok: r.ok, status: r.status, data, detail: r.ok ? "" : describe(data, r) };
  }

  window.camfleet = Object.freeze({ showError, detailOf, requestJSON });
})();
