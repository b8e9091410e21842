/* The Runs tab: the list follows the DAG's runs live. A run event (created, started, finished)
   refetches this page of runs from the API, with the same filter and offset, and redraws it. */
(function () {
  "use strict";
  const hf = window.hf;
  const table = document.getElementById("runs-table");
  if (!table) return;
  const dagId = table.dataset.dag;
  const tbody = table.querySelector("tbody");
  const total = document.getElementById("runs-total");

  function typeCell(r) {
    const cell = hf.el("td", null, r.run_type || "");
    if (r.backfill_id) {
      cell.append(" ", hf.el("a", { class: "muted small", href: table.dataset.backfills }, "#" + r.backfill_id));
    }
    return cell;
  }

  function render(runs, count) {
    const rows = runs.map(function (r) {
      const tr = hf.el("tr", null,
        hf.el("td", null, hf.badge(r.state)),
        hf.el("td", null, hf.el("a", { href: "/dags/" + hf.enc(dagId) + "/runs/" + hf.enc(r.run_id) }, r.run_id)),
        typeCell(r),
        hf.el("td", null, hf.fmtDate(r.logical_date)),
        hf.el("td", null, hf.fmtDate(r.start_date)),
        hf.el("td", null, hf.fmtDate(r.end_date)),
        hf.el("td", null, hf.fmtDuration(r.duration)),
        hf.el("td", null, r.triggered_by || ""));
      tr.dataset.run = r.run_id;
      return tr;
    });
    if (!rows.length) rows.push(hf.el("tr", null, hf.el("td", { colspan: "8", class: "empty" }, "No runs.")));
    tbody.replaceChildren.apply(tbody, rows);
    if (total) total.textContent = count + " run" + (count === 1 ? "" : "s");
  }

  async function refresh() {
    const q = new URLSearchParams({ limit: table.dataset.limit, offset: table.dataset.offset });
    if (table.dataset.state) q.set("state", table.dataset.state);
    if (table.dataset.runType) q.set("run_type", table.dataset.runType);
    let data;
    try { data = await hf.api("/dags/" + hf.enc(dagId) + "/runs?" + q.toString()); } catch (e) { return; }
    render(data.runs || [], data.total || 0);
  }
  const refreshSoon = hf.debounce(refresh, 150);

  hf.live(["dag:" + dagId], function (events) {
    if (events.some(function (e) { return e.dag_id === dagId && e.kind === "run"; })) refreshSoon();
  }, refresh);
})();
