/* The task-instance page: the selected try's log is tailed from the API (?offset=<last seq>)
   whenever a log or state event for this task instance arrives, and after every reconnect. */
(function () {
  "use strict";
  const hf = window.hf;
  const root = document.getElementById("ti-view");
  if (!root) return;
  const dagId = root.dataset.dag;
  const runId = root.dataset.run;
  const taskId = root.dataset.task;
  const tiId = Number(root.dataset.ti);
  const selectedTry = Number(root.dataset.try);
  let currentTry = Number(root.dataset.currentTry);
  let offset = Number(root.dataset.offset) || 0;
  let finished = root.dataset.finished === "true";
  const mapIndex = Number(root.dataset.mapIndex || "-1");
  const base = "/dags/" + hf.enc(dagId) + "/runs/" + hf.enc(runId) + "/tasks/" + hf.enc(taskId);
  const which = mapIndex >= 0 ? "map_index=" + mapIndex : ""; // one instance of a mapped task
  const logBox = document.getElementById("log");
  const status = document.getElementById("log-status");
  const empty = document.getElementById("log-empty");
  const search = document.getElementById("log-search");
  const filtered = document.getElementById("log-filtered");
  const matches = document.getElementById("log-matches");

  /* Search: the lines that contain the text (case-insensitive), the text marked; the whole log
     again when the box is empty. Re-applied as new lines arrive. */
  function applySearch() {
    if (!search || !filtered) return;
    const q = search.value.trim().toLowerCase();
    if (!q) {
      filtered.hidden = true;
      logBox.hidden = !logBox.textContent && finished;
      matches.textContent = "";
      return;
    }
    const lines = logBox.textContent.split("\n").filter(function (line) { return line.toLowerCase().includes(q); });
    const nodes = [];
    for (const line of lines) {
      let rest = line;
      let at = rest.toLowerCase().indexOf(q);
      while (at >= 0) {
        nodes.push(document.createTextNode(rest.slice(0, at)), hf.el("mark", null, rest.slice(at, at + q.length)));
        rest = rest.slice(at + q.length);
        at = rest.toLowerCase().indexOf(q);
      }
      nodes.push(document.createTextNode(rest + "\n"));
    }
    filtered.replaceChildren.apply(filtered, nodes);
    filtered.hidden = false;
    logBox.hidden = true;
    matches.textContent = lines.length + " line" + (lines.length === 1 ? "" : "s");
  }
  if (search) search.addEventListener("input", applySearch);

  /* Timestamps: each line start gets an empty marker whose ::before shows the time its chunk was
     sent; being CSS content, it is not in the log's text (search, "no output" and copy ignore it).
     The toggle is remembered in this browser. */
  const stampsBox = document.getElementById("log-timestamps");
  let lineStart = true;
  function stamp(chunk) {
    const at = chunk.dataset.at ? hf.fmtDate(chunk.dataset.at) : "";
    const text = chunk.textContent;
    const parts = [];
    let from = 0;
    while (from < text.length) {
      const nl = text.indexOf("\n", from);
      const end = nl < 0 ? text.length : nl + 1;
      if (lineStart) parts.push(hf.el("span", { class: "ts", "data-t": at ? "[" + at + "] " : "" }));
      parts.push(document.createTextNode(text.slice(from, end)));
      lineStart = nl >= 0;
      from = end;
    }
    chunk.replaceChildren.apply(chunk, parts);
  }
  for (const chunk of logBox.querySelectorAll(".chunk")) stamp(chunk);
  if (stampsBox) {
    let saved = null;
    try { saved = window.localStorage.getItem("hareflow.logTimestamps"); } catch (e) { saved = null; }
    stampsBox.checked = saved === "on";
    logBox.classList.toggle("show-ts", stampsBox.checked);
    stampsBox.addEventListener("change", function () {
      logBox.classList.toggle("show-ts", stampsBox.checked);
      try { window.localStorage.setItem("hareflow.logTimestamps", stampsBox.checked ? "on" : "off"); } catch (e) { /* private mode */ }
    });
  }

  function showEmpty() {
    const none = !logBox.textContent;
    if (empty) empty.hidden = !(none && finished);
    if (!search || !search.value.trim()) logBox.hidden = none && finished;
  }
  let busy = false;
  let again = false;

  function atBottom() { return logBox.scrollHeight - logBox.scrollTop - logBox.clientHeight < 30; }

  async function pull() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      let more = true;
      while (more || again) {
        again = false;
        const stick = atBottom();
        const r = await hf.api(base + "/logs/" + selectedTry + "?offset=" + offset + (which ? "&" + which : ""));
        if (r.chunks.length) {
          for (const c of r.chunks) {
            const chunk = hf.el("span", { class: "chunk", "data-at": c.at || "" }, c.text);
            stamp(chunk);
            logBox.append(chunk);
          }
          if (stick) logBox.scrollTop = logBox.scrollHeight;
        }
        offset = r.offset;
        finished = r.finished;
        more = r.more;
      }
      status.textContent = finished ? "" : "following\u2026";
      showEmpty();
      applySearch();
    } catch (e) {
      status.textContent = "log: " + e.message;
    } finally {
      busy = false;
    }
  }

  function setState(state, tryNumber) {
    const badge = document.getElementById("ti-state");
    if (badge) { hf.setState(badge, state); badge.textContent = state; }
    if (tryNumber && tryNumber !== currentTry) {
      currentTry = tryNumber;
      document.getElementById("ti-try").textContent = String(tryNumber);
      if (tryNumber > selectedTry && !document.getElementById("new-try")) {
        const link = hf.el("a", { id: "new-try", href: "?try=" + tryNumber + (which ? "&" + which : "") }, " try " + tryNumber + " started: show it");
        status.after(link);
      }
    }
  }

  function field(name, value) {
    const cell = document.querySelector('#ti-meta [data-field="' + name + '"]');
    if (cell) cell.replaceChildren(value);
  }

  /* Timings, host, error and return value, from the API (after a state change or a reconnect). */
  async function refreshDetails() {
    let ti;
    try { ti = await hf.api(base + (which ? "?" + which : "")); } catch (e) { return; }
    setState(ti.state, ti.try_number);
    if (ti.try_number !== selectedTry) return;  /* the side panel shows an earlier try, as it ended */
    field("state", hf.badge(ti.state));
    field("queued_at", hf.fmtDate(ti.queued_at));
    field("start_date", hf.fmtDate(ti.start_date));
    field("end_date", hf.fmtDate(ti.end_date));
    field("duration", hf.fmtDuration(ti.duration));
    field("hostname", (ti.hostname || "") + (ti.pid ? " (pid " + ti.pid + ")" : ""));
    field("worker", ti.worker || "");
    document.getElementById("ti-error-box").hidden = !ti.error;
    document.getElementById("ti-error-title").textContent = ti.state === "skipped" ? "Why it was skipped" : "Error";
    document.getElementById("ti-error").textContent = (ti.error || "").slice(0, 65536);
    const result = document.getElementById("ti-result");
    const none = ti.result === null || ti.result === undefined;
    result.hidden = none;
    document.getElementById("ti-no-result").hidden = !none;
    result.textContent = none ? "" : JSON.stringify(ti.result, null, 2).slice(0, 65536);
    showRendered(ti.rendered);
  }

  /* The try's rendered template fields: stored with its final report, so they appear when the
     try ends (or a reconnect refetches them). */
  function showRendered(rendered) {
    const box = document.getElementById("ti-rendered-box");
    const table = document.getElementById("ti-rendered");
    if (!box || !table) return;
    const names = rendered ? Object.keys(rendered) : [];
    box.hidden = names.length === 0;
    table.replaceChildren.apply(table, names.map(function (name) {
      const value = rendered[name];
      const text = (typeof value === "string" ? value : JSON.stringify(value, null, 2)).slice(0, 65536);
      const cell = hf.el("td", null, hf.el("pre", { class: "rendered", "data-field": name }, text));
      return hf.el("tr", null, hf.el("th", null, name), cell);
    }));
  }
  const refreshSoon = hf.debounce(refreshDetails, 200);

  function resync() {
    refreshDetails();
    pull();
  }

  function onEvents(events) {
    let wanted = false;
    for (const e of events) {
      const mine = e.ti_id === tiId || (e.run_id === runId && e.task_id === taskId && (e.map_index === undefined || e.map_index === mapIndex));
      if (!mine) continue;
      if (e.kind === "task") { setState(e.state, e.try_number); refreshSoon(); wanted = true; }
      if (e.kind === "log" && e.try_number === selectedTry) wanted = true;
    }
    if (wanted) pull();
  }

  logBox.scrollTop = logBox.scrollHeight;
  hf.live(["dag:" + dagId], onEvents, resync);
})();
