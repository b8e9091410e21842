/* Workers and queues pages: refreshed from the API every 5 s (heartbeats are not events), and at
   once when task states change (the "workers" room), so running counts follow finished tasks. */
(function () {
  "use strict";
  const hf = window.hf;
  const workers = document.getElementById("workers-table");
  const queues = document.getElementById("queues-table");

  function fill(table, rows, empty) {
    const body = table.tBodies[0];
    if (!rows.length) {
      body.replaceChildren(hf.el("tr", null, hf.el("td", { colspan: String(table.tHead.rows[0].cells.length), class: "empty" }, empty)));
    } else {
      body.replaceChildren.apply(body, rows);
    }
  }

  async function refreshWorkers() {
    const data = await hf.api("/workers" + (workers.dataset.all === "true" ? "?all=true" : ""));
    document.getElementById("worker-count").textContent = String(data.workers.length);
    const hidden = document.getElementById("workers-hidden");
    if (hidden && workers.dataset.all !== "true") {
      hidden.replaceChildren(data.hidden ? hf.el("a", { href: "?all=true" }, data.hidden + " stopped or lost for over a day not shown") : "");
    }
    fill(workers, data.workers.map(function (w) {
      const load = w.concurrency ? Math.round(w.running / w.concurrency * 10) : 0;
      const stale = w.heartbeat_age > 30 && w.state === "active";
      return hf.el("tr", { "data-worker": w.name },
        hf.el("td", null, hf.badge(w.state)),
        hf.el("td", null, w.name),
        hf.el("td", null, w.hostname + " ", hf.el("span", { class: "muted small" }, "pid " + w.pid)),
        hf.el("td", null, ...w.queues.map(function (q) { return hf.el("span", { class: "tag" }, q); })),
        hf.el("td", { class: "running" }, String(w.running)),
        hf.el("td", null, String(w.concurrency)),
        hf.el("td", null, hf.el("span", { class: "bar" }, hf.el("span", { class: "fill load-" + load }))),
        hf.el("td", { class: stale ? "stale" : null }, hf.fmtDuration(w.heartbeat_age) + " ago"),
        hf.el("td", null, hf.fmtDate(w.first_seen)));
    }), "No worker has reported yet.");
  }

  async function refreshQueues() {
    const data = await hf.api("/queues");
    const show = function (v) { return v === null || v === undefined ? "?" : String(v); };
    fill(queues, data.queues.map(function (q) {
      let dead = "\u2013";
      if (q.dead_letters) {
        dead = hf.el("a", { class: "danger-text", href: "/deadletters?queue=" + encodeURIComponent(q.dead_letters_queue) }, String(q.dead_letters));
      } else if (q.dead_letters === 0) {
        dead = "0";
      }
      return hf.el("tr", null, hf.el("td", null, q.name), hf.el("td", null, show(q.messages)),
        hf.el("td", null, show(q.consumers)), hf.el("td", null, String(q.queued_tasks)), hf.el("td", null, String(q.running_tasks)),
        hf.el("td", { class: "dead-depth" }, dead));
    }), "No queues.");
  }

  function tick() {
    const jobs = [];
    if (workers) jobs.push(refreshWorkers());
    if (queues) jobs.push(refreshQueues());
    Promise.all(jobs).catch(function () { /* keep the last table */ });
  }
  setInterval(tick, 5000);
  // The queues page also follows dead letters (its Dead letters column).
  hf.live(queues ? ["workers", "deadletters"] : ["workers"], hf.debounce(tick, 300), tick);
})();
