/* The DAG list: recent-run counts and last runs update as runs change. */
(function () {
  "use strict";
  const hf = window.hf;
  const table = document.getElementById("dag-table");
  if (!table) return;
  const rows = new Map();
  for (const tr of table.tBodies[0].rows) if (tr.dataset.dag) rows.set(tr.dataset.dag, tr);
  if (!rows.size) return;
  const STATES = ["success", "failed", "running", "queued"];
  let pending = new Set();

  function update(d) {
    const tr = rows.get(d.dag_id);
    if (!tr) return;
    const recent = tr.querySelector('[data-field="recent"]');
    recent.replaceChildren.apply(recent, STATES.filter(function (s) { return d.recent_states[s]; }).map(function (s) {
      return hf.el("span", { class: "pill " + hf.stateClass(s), title: s }, d.recent_states[s]);
    }));
    const last = tr.querySelector('[data-field="last"]');
    if (d.last_run) {
      const href = "/dags/" + hf.enc(d.dag_id) + "/runs/" + hf.enc(d.last_run.run_id);
      last.replaceChildren(hf.badge(d.last_run.state), " ",
        hf.el("a", { href: href, class: "muted small", title: d.last_run.run_id }, hf.fmtDate(d.last_run.logical_date)));
    }
  }

  const flush = hf.debounce(async function () {
    const ids = Array.from(pending);
    pending = new Set();
    if (!ids.length) return;
    try {
      const query = ids.map(function (id) { return "dag_id=" + hf.enc(id); }).join("&");
      const data = await hf.api("/dags?limit=1000&" + query);
      data.dags.forEach(update);
    } catch (e) { /* next event retries */ }
  }, 400);

  function onEvents(events) {
    for (const e of events) if (rows.has(e.dag_id)) pending.add(e.dag_id);
    flush();
  }

  function resync() {
    for (const id of rows.keys()) pending.add(id);
    flush();
  }

  hf.live(["dags"], onEvents, resync);
})();
