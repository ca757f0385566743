// Training page: poll the running job's progress every 2 s and update the stage, ETA, events and curves.
// Plain JS, no library: the curves are the server's SVG, re-fetched when a new epoch arrived.
(function () {
  "use strict";
  var box = document.getElementById("current-job");
  if (!box) { return; }
  var jobId = box.dataset.job;
  var after = parseInt(box.dataset.after || "0", 10);
  var epochs = parseInt(box.dataset.epochs || "0", 10);
  var poll = parseInt(box.dataset.poll || "2000", 10);
  var failures = 0;
  var MAX_FAILURES = 30;

  function text(id, value) {
    var el = document.getElementById(id);
    if (el) { el.textContent = value; }
  }

  function duration(s) {
    if (s === null || s === undefined) { return "–"; }
    s = Math.round(s);
    if (s >= 3600) { return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min"; }
    if (s >= 60) { return Math.floor(s / 60) + " min " + (s % 60) + " s"; }
    return s + " s";
  }

  function refreshChart() {
    fetch(box.dataset.chart, { cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (svg) { if (svg) { document.getElementById("job-chart").innerHTML = svg; } });
  }

  function addEvents(events) {
    var list = document.getElementById("job-events");
    if (!list) { return; }
    events.forEach(function (e) {
      var li = document.createElement("li");
      var at = new Date(e.created_at);
      li.textContent = at.toLocaleTimeString() + " " + (e.stage || "") + " " +
        Math.round(e.progress * 100) + " % " + (e.message || "");
      list.appendChild(li);
    });
    while (list.children.length > 50) { list.removeChild(list.firstChild); }
  }

  function tick() {
    fetch("/api/v1/jobs/" + jobId + "/progress?after=" + after, { cache: "no-store" })
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
      .then(function (p) {
        failures = 0;
        var job = p.job;
        var status = document.getElementById("job-status");
        status.textContent = job.status;
        status.className = "badge " + job.status;
        document.getElementById("job-progress").value = job.progress;
        text("job-percent", Math.round(job.progress * 100) + " %");
        text("job-stage", job.stage || "waiting for a trainer");
        text("job-message", job.message || "");
        text("job-eta", duration(p.eta_s));
        if (p.events.length) { addEvents(p.events); }
        if (p.last_event_id) { after = p.last_event_id; }
        if (p.epochs.length !== epochs) { epochs = p.epochs.length; refreshChart(); }
        if (job.status !== "queued" && job.status !== "running") {
          window.setTimeout(function () { window.location.reload(); }, 1000);
          return;
        }
        window.setTimeout(tick, poll);
      })
      .catch(function () {
        failures += 1;
        if (failures < MAX_FAILURES) { window.setTimeout(tick, poll * 2); }
      });
  }

  window.setTimeout(tick, poll);
})();
