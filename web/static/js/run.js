/* The run page: task states update live; anything unexpected (a task instance created, a
   reconnect) refetches the run's task instances from the API. */
(function () {
  "use strict";
  const hf = window.hf;
  const root = document.getElementById("run-view");
  if (!root) return;
  const dagId = root.dataset.dag;
  const runId = root.dataset.run;
  const base = "/dags/" + hf.enc(dagId) + "/runs/" + hf.enc(runId);
  const tbody = document.querySelector("#ti-table tbody");

  function rowFor(task, mapIndex) {
    const index = String(mapIndex === undefined ? -1 : mapIndex);
    for (const tr of tbody.rows) if (tr.dataset.task === task && (tr.dataset.mapIndex || "-1") === index) return tr;
    return null;
  }

  function setRunState(state) {
    const badge = document.getElementById("run-state");
    if (badge) { hf.setState(badge, state); badge.textContent = state; }
  }

  function render(tis) {
    const rows = tis.map(function (ti) {
      const mapped = ti.map_index >= 0;
      const link = hf.el("a", { href: base + "/tasks/" + hf.enc(ti.task_id) + (mapped ? "?map_index=" + ti.map_index : "") },
        ti.task_id + (mapped ? " [" + ti.map_index + "]" : ""));
      const tr = hf.el("tr", null,
        hf.el("td", null, link),
        hf.el("td", { "data-field": "state" }, hf.badge(ti.state)),
        hf.el("td", { "data-field": "try" }, ti.try_number + "/" + ti.max_tries),
        hf.el("td", { "data-field": "start" }, hf.fmtDate(ti.start_date)),
        hf.el("td", { "data-field": "end" }, hf.fmtDate(ti.end_date)),
        hf.el("td", { "data-field": "duration" }, hf.fmtDuration(ti.duration)),
        hf.el("td", { "data-field": "host" }, ti.hostname || ""));
      tr.dataset.task = ti.task_id;
      tr.dataset.mapIndex = String(ti.map_index);
      return tr;
    });
    tbody.replaceChildren.apply(tbody, rows);
  }

  const resync = hf.debounce(async function () {
    try {
      const data = await hf.api(base + "/tasks");
      render(data.task_instances);
      setRunState(data.run_state);
    } catch (e) { /* next event retries */ }
  }, 150);

  function onEvents(events) {
    let stale = false;
    for (const e of events) {
      if (e.dag_id !== dagId || e.run_id !== runId) continue;
      if (e.kind === "run") setRunState(e.state);
      else if (e.kind === "task") {
        const tr = rowFor(e.task_id, e.map_index);
        const cell = tr && tr.querySelector('[data-field="state"]');
        if (!cell || tr.classList.contains("muted")) { stale = true; continue; }
        cell.replaceChildren(hf.badge(e.state));
        stale = true; // times, try and host changed too: refetch them (debounced)
      }
    }
    if (stale) resync();
  }

  hf.live(["dag:" + dagId], onEvents, resync);
})();
