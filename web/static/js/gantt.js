/* The run's Gantt chart: one row per task instance, the time it waited in its queue (hatched)
   then its current try running (coloured by state), after its earlier tries as they ended. Live: every state event of this run refetches
   /gantt (debounced), and while something is queued or running a one-second tick stretches the
   open bars to the server's "now", so bars grow without a reload. */
(function () {
  "use strict";
  const hf = window.hf;
  const root = document.getElementById("gantt-view");
  if (!root || !hf || !hf.charts) return;
  const charts = hf.charts;
  const dagId = root.dataset.dag;
  const runId = root.dataset.run;
  const base = "/dags/" + hf.enc(dagId) + "/runs/" + hf.enc(runId);
  const box = document.getElementById("gantt-box");
  const summary = document.getElementById("gantt-summary");
  const ROW_HEIGHT = 24;
  // The order of the legend (and of the datasets drawn on top of each other).
  const STATES = ["success", "running", "failed", "up_for_retry", "up_for_reschedule", "upstream_failed",
    "skipped", "removed", "scheduled", "none"];
  const OPEN = new Set(["queued", "running"]);

  let data = JSON.parse(document.getElementById("gantt-data").textContent);
  let fetchedAt = Date.now();
  let rows = [];
  let origin = 0;

  const ms = function (iso) { return iso ? Date.parse(iso) : NaN; };
  const serverNow = function () { return ms(data.now) + (Date.now() - fetchedAt); };
  const clock = function (t) { return isNaN(t) ? "" : new Date(t).toISOString().slice(11, 19); };

  // Finished without running: no bar to hover, so the row's label says why.
  const BARLESS = new Set(["upstream_failed", "skipped", "removed"]);

  function label(ti) {
    let text = ti.task_id + (ti.map_index >= 0 ? " [" + ti.map_index + "]" : "");
    if (ti.try_number > 1) text += " · try " + ti.try_number;
    if (BARLESS.has(ti.state) && !ti.start_date) text += " · " + ti.state;
    return text;
  }

  /* Each row's spans in milliseconds: [queued, started) waiting, [started, ended) running. */
  function spans(ti, now) {
    const queued = ms(ti.queued_at), start = ms(ti.start_date);
    let end = ms(ti.end_date);
    const out = { wait: null, run: null };
    if (!isNaN(start)) {
      if (isNaN(end)) end = ti.state === "running" ? now : start;
      out.run = [start, Math.max(end, start)];
      if (!isNaN(queued) && queued <= start) out.wait = [queued, start];
    } else if (!isNaN(queued) && ti.state === "queued") {
      out.wait = [queued, Math.max(now, queued)];
    }
    return out;
  }

  /* An earlier try's running span, as it ended (kept by the metastore when the next try began). */
  function earlierSpans(ti) {
    return (ti.earlier_tries || []).map(function (t) {
      const start = ms(t.start_date), end = ms(t.end_date);
      return isNaN(start) ? null : { t: t, run: [start, isNaN(end) ? start : Math.max(end, start)] };
    }).filter(Boolean);
  }

  function buildRows() {
    const now = serverNow();
    rows = data.task_instances.map(function (ti) {
      return { ti: ti, label: label(ti), spans: spans(ti, now), earlier: earlierSpans(ti) };
    });
    for (const task of data.missing) rows.push({ ti: null, label: task, spans: { wait: null, run: null }, earlier: [] });
    const starts = [ms(data.queued_at)];
    for (const r of rows) {
      if (r.spans.wait) starts.push(r.spans.wait[0]);
      if (r.spans.run) starts.push(r.spans.run[0]);
      for (const e of r.earlier) starts.push(e.run[0]);
    }
    origin = Math.min.apply(null, starts.filter(function (t) { return !isNaN(t); }).concat([now]));
  }

  function seconds(pair) { return pair ? [(pair[0] - origin) / 1000, (pair[1] - origin) / 1000] : null; }

  function datasets() {
    const common = { grouped: false, borderSkipped: false, barPercentage: 0.9, categoryPercentage: 0.9, minBarLength: 2 };
    const waitStyle = charts.stateStyle("queued");
    const out = [Object.assign({
      label: "queued", key: "queued",
      data: rows.map(function (r) { return seconds(r.spans.wait); }),
      backgroundColor: waitStyle.background, borderColor: waitStyle.border, borderWidth: waitStyle.width,
    }, common)];
    // Earlier tries: one dataset per try position (a row has at most one bar per dataset), the
    // first named in the legend; each drawn in the state its try ended with (up_for_retry, mostly).
    const most = Math.max(0, ...rows.map(function (r) { return r.earlier.length; }));
    for (let k = 0; k < most; k++) {
      const styles = rows.map(function (r) { return r.earlier[k] ? charts.stateStyle(r.earlier[k].t.state) : null; });
      const legendStyle = charts.stateStyle("up_for_retry");  // how most earlier tries ended
      out.push(Object.assign({
        label: "earlier tries", key: "earlier:" + k, earlierIndex: k, hideInLegend: k > 0,
        legendFill: legendStyle.background, legendStroke: legendStyle.border,
        data: rows.map(function (r) { return r.earlier[k] ? seconds(r.earlier[k].run) : null; }),
        backgroundColor: styles.map(function (st) { return st ? st.background : null; }),
        borderColor: styles.map(function (st) { return st ? st.border : null; }),
        borderWidth: styles.map(function (st) { return st ? st.width : 0; }),
      }, common));
    }
    const present = new Set(rows.filter(function (r) { return r.spans.run; }).map(function (r) { return r.ti.state; }));
    const order = STATES.concat(Array.from(present).filter(function (s) { return !STATES.includes(s); }).sort());
    for (const state of order) {
      if (!present.has(state)) continue;
      const style = charts.stateStyle(state);
      out.push(Object.assign({
        label: state, key: state,
        data: rows.map(function (r) { return r.spans.run && r.ti.state === state ? seconds(r.spans.run) : null; }),
        backgroundColor: style.background, borderColor: style.border, borderWidth: style.width,
      }, common));
    }
    return out;
  }

  function tooltipLines(row) {
    const ti = row.ti;
    if (!ti) return ["no task instance yet"];
    const lines = ["state: " + ti.state];
    const wait = row.spans.wait, run = row.spans.run;
    if (wait) lines.push("queued " + clock(wait[0]) + " UTC → " + (run ? "started " + clock(wait[1]) : "still waiting") +
      " (" + hf.fmtDuration((wait[1] - wait[0]) / 1000) + ")");
    if (run) {
      const open = isNaN(ms(ti.end_date));
      lines.push((open ? "running since " : "ran ") + clock(run[0]) + " UTC" + (open ? "" : " → " + clock(run[1])) +
        " (" + hf.fmtDuration((run[1] - run[0]) / 1000) + ")");
    }
    let tries = "try " + ti.try_number + " of " + ti.max_tries;
    const unkept = ti.try_number - 1 - row.earlier.length;
    if (unkept > 0) tries += " (" + unkept + " earlier tr" + (unkept === 1 ? "y ended" : "ies ended") + " before tries were kept)";
    lines.push(tries);
    for (const e of row.earlier) {
      lines.push("try " + e.t.try_number + ": " + e.t.state + ", ran " + clock(e.run[0]) + " → " + clock(e.run[1]) +
        " UTC (" + hf.fmtDuration((e.run[1] - e.run[0]) / 1000) + ")" + (e.t.hostname ? " on " + e.t.hostname : ""));
    }
    if (ti.state === "up_for_retry" && ti.next_retry_at) lines.push("next try from " + clock(ms(ti.next_retry_at)));
    if (ti.hostname) lines.push("host " + ti.hostname);
    return lines;
  }

  function short(text) {
    const max = window.innerWidth < 1000 ? 22 : 36;
    return text.length > max ? text.slice(0, max - 1) + "…" : text;
  }

  function xMax() {
    let end = 0;
    for (const r of rows) {
      for (const pair of [r.spans.wait, r.spans.run]) if (pair) end = Math.max(end, pair[1]);
      for (const e of r.earlier) end = Math.max(end, e.run[1]);
    }
    return end ? Math.max((end - origin) / 1000, 0.01) : 1;
  }

  const chart = new window.Chart(document.getElementById("gantt-chart"), {
    type: "bar",
    data: { labels: [], datasets: [] },
    options: {
      indexAxis: "y",
      responsive: true,
      maintainAspectRatio: false,
      interaction: { mode: "nearest", axis: "xy", intersect: true },
      scales: {
        x: {
          type: "linear", min: 0, position: "top",
          title: { display: true, text: "" },
          ticks: { callback: function (v) { return charts.fmtSeconds(v); }, maxRotation: 0 },
        },
        y: {
          stacked: false,
          ticks: { autoSkip: false, color: charts.ink, font: { family: getComputedStyle(document.body).getPropertyValue("--mono") || "monospace" },
            callback: function (value) { return short(this.getLabelForValue(value)); } },
          grid: { display: false },
        },
      },
      plugins: {
        legend: { position: "bottom", labels: { boxWidth: 14, boxHeight: 10, color: charts.ink,
          filter: function (item, legendData) { return !legendData.datasets[item.datasetIndex].hideInLegend; },
          // Earlier tries colour each bar by its own end state: the legend shows the usual one.
          generateLabels: function (c) {
            const items = window.Chart.defaults.plugins.legend.labels.generateLabels(c);
            for (const item of items) {
              const ds = c.data.datasets[item.datasetIndex];
              if (ds && ds.legendFill) { item.fillStyle = ds.legendFill; item.strokeStyle = ds.legendStroke; }
            }
            return items;
          } } },
        tooltip: {
          callbacks: {
            title: function (items) { return items.length ? rows[items[0].dataIndex].label : ""; },
            label: function (item) { return tooltipLines(rows[item.dataIndex]); },
          },
        },
      },
      onClick: function (event) {
        const hit = charts.clickedIndex(chart, event);
        const ti = hit && rows[hit.index] && rows[hit.index].ti;
        if (!ti) return;
        window.location.href = base + "/tasks/" + hf.enc(ti.task_id) + (ti.map_index >= 0 ? "?map_index=" + ti.map_index : "");
      },
      onHover: function (event, elements) {
        event.native.target.classList.toggle("clickable", elements.length > 0);
      },
    },
  });

  function setRunState(state) {
    const badge = document.getElementById("run-state");
    if (badge) { hf.setState(badge, state); badge.textContent = state; }
  }

  function hasOpenBars() { return data.task_instances.some(function (ti) { return OPEN.has(ti.state); }); }

  function draw() {
    buildRows();
    // Thousands of mapped instances get thinner rows (a canvas taller than about 32,000 px is not
    // drawn) and only some of their labels.
    const many = rows.length > 300;
    const rowHeight = many ? Math.max(6, Math.min(14, Math.floor(28000 / rows.length))) : ROW_HEIGHT;
    chart.options.scales.y.ticks.autoSkip = many;
    box.style.height = (rows.length * rowHeight + 96) + "px";  // CSSOM, which the CSP allows
    chart.data.labels = rows.map(function (r) { return r.label; });
    chart.data.datasets = datasets();
    chart.options.scales.x.suggestedMax = xMax();  // "suggested": the axis ends on a round tick
    chart.options.scales.x.title.text = "time since the run was queued (" + clock(origin) + " UTC)";
    chart.update();
    const counts = {};
    for (const ti of data.task_instances) counts[ti.state] = (counts[ti.state] || 0) + 1;
    const parts = [data.task_instances.length + " task instance" + (data.task_instances.length === 1 ? "" : "s")];
    for (const state of ["running", "queued", "failed"]) if (counts[state]) parts.push(counts[state] + " " + state);
    const runSpan = [ms(data.start_date), ms(data.end_date)];
    if (!isNaN(runSpan[0])) parts.push((isNaN(runSpan[1]) ? "running for " : "took ") +
      hf.fmtDuration(((isNaN(runSpan[1]) ? serverNow() : runSpan[1]) - runSpan[0]) / 1000));
    summary.textContent = parts.join(" · ");
    root.dataset.bars = String(rows.filter(function (r) { return r.spans.run || r.spans.wait; }).length);
  }

  let ticker = null;
  function tick() {
    const open = hasOpenBars();
    if (open && !ticker) ticker = setInterval(draw, 1000);
    else if (!open && ticker) { clearInterval(ticker); ticker = null; }
  }

  const resync = hf.debounce(async function () {
    try {
      const fresh = await hf.api(base + "/gantt");
      data = fresh;
      fetchedAt = Date.now();
      setRunState(data.run_state);
      draw();
      tick();
    } catch (e) { /* the next event or the periodic resync retries */ }
  }, 150);

  function onEvents(events) {
    let mine = false;
    for (const e of events) {
      if (e.dag_id !== dagId || e.run_id !== runId) continue;
      if (e.kind === "run") setRunState(e.state);
      mine = true;
    }
    if (mine) resync();
  }

  draw();
  tick();
  hf.charts.gantt = chart;  // for tests and the console
  hf.live(["dag:" + dagId], onEvents, resync);
})();
