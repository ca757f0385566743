// CSRF: every state-changing fetch to this hub carries the session's token (from <meta name="csrf-token">)
// in the X-CSRF-Token header, which the hub requires of cookie-authenticated requests. Forms carry it as a
// hidden csrf_token field; a form (or the button that submits it) with data-confirm asks before it is sent (no
// inline handlers: the CSP allows no inline script).
(function () {
  "use strict";
  const SAFE = new Set(["GET", "HEAD", "OPTIONS"]);
  const token = () => document.querySelector('meta[name="csrf-token"]')?.content || "";
  const plainFetch = window.fetch.bind(window);

  window.fetch = function (input, init) {
    const options = Object.assign({}, init);
    const request = input instanceof Request ? input : null;
    const method = (options.method || (request && request.method) || "GET").toUpperCase();
    const url = new URL(request ? request.url : String(input), location.href);
    if (!SAFE.has(method) && url.origin === location.origin && token()) {
      const headers = new Headers(options.headers || (request && request.headers) || undefined);
      if (!headers.has("X-CSRF-Token")) headers.set("X-CSRF-Token", token());
      options.headers = headers;
    }
    return plainFetch(input, options);
  };

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement)) return;
    // The button that sent it may ask on its own (one form, several actions: only "Roll back" asks).
    const question = (event.submitter && event.submitter.dataset.confirm) || form.dataset.confirm;
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });
})();
