/* What the Gantt and durations charts share: Chart.js defaults that match the UI, the state
   palette read from the stylesheet (so the charts follow hareflow.css, never a copy of it), and
   fill patterns that tell states apart without colour. */
(function () {
  "use strict";
  const hf = window.hf;
  const Chart = window.Chart;
  if (!hf || !Chart) return;

  const css = getComputedStyle(document.documentElement);
  const ink = css.getPropertyValue("--ink").trim() || "#1d2330";
  const muted = css.getPropertyValue("--muted").trim() || "#6b7280";
  const line = css.getPropertyValue("--line").trim() || "#e2e5ea";
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  Chart.defaults.font.size = 12;
  Chart.defaults.color = muted;
  Chart.defaults.borderColor = line;
  Chart.defaults.animation = false;  // live updates redraw often: no tweening between them

  const charts = (hf.charts = { ink: ink, muted: muted });

  /* A state's colour from the stylesheet (--s-<state>), e.g. "success" -> "#2e9e4f". */
  charts.stateColor = function (state) {
    const value = css.getPropertyValue("--s-" + (state || "none")).trim();
    return value || css.getPropertyValue("--s-removed").trim() || "#d6d9de";
  };

  /* Diagonal stripes of `color` on `background`: a pattern reads as "not finished" to someone
     who cannot tell the greens apart. */
  charts.stripes = function (color, background) {
    const size = 8;
    const tile = document.createElement("canvas");
    tile.width = tile.height = size;
    const g = tile.getContext("2d");
    g.fillStyle = background;
    g.fillRect(0, 0, size, size);
    g.strokeStyle = color;
    g.lineWidth = 2.5;
    g.beginPath();
    g.moveTo(-1, size + 1); g.lineTo(size + 1, -1);
    g.moveTo(size - 1, size + 1); g.lineTo(size + 1, size - 1);
    g.moveTo(-1, 1); g.lineTo(1, -1);
    g.stroke();
    return g.createPattern(tile, "repeat");
  };

  /* Fill and border of a bar (or point) of `state`, distinguishable without colour: failed bars
     carry a dark border, running and retrying ones stripes, queued ones a light hatch. */
  charts.stateStyle = function (state) {
    const color = charts.stateColor(state);
    if (state === "running" || state === "up_for_retry" || state === "up_for_reschedule") {
      return { background: charts.stripes(color, "#ffffff"), border: color, width: 1 };
    }
    if (state === "queued") return { background: charts.stripes(color, "#f3f4f6"), border: color, width: 1 };
    if (state === "failed" || state === "upstream_failed") return { background: color, border: "#5c1717", width: 2 };
    return { background: color, border: color, width: 0 };
  };

  /* Colour-blind-safe colours (Okabe & Ito's, with olive for their yellow, which is unreadable on
     white) and point shapes for the lines of several tasks: two lines never share both. */
  const SERIES = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000", "#999933"];
  const SHAPES = ["circle", "triangle", "rect", "rectRot", "crossRot", "star", "rectRounded", "cross"];
  charts.series = function (i) {
    return { color: SERIES[i % SERIES.length], shape: SHAPES[Math.floor(i / SERIES.length) % SHAPES.length] };
  };

  /* Seconds as a short axis label: 45 s, 2m 05s, 1h 10m. */
  charts.fmtSeconds = function (seconds) {
    if (seconds === null || seconds === undefined || isNaN(seconds)) return "";
    if (seconds < 60) return (Math.round(seconds * 10) / 10) + " s";
    return hf.fmtDuration(seconds).replace(/ 00s$/, "");
  };

  /* "2026-03-01 12:00" from an ISO time (UTC, like every time in the UI). */
  charts.fmtShortDate = function (iso) { return hf.fmtDate(iso).slice(0, 16); };

  /* The data index under a click, or -1. */
  charts.clickedIndex = function (chart, event) {
    const hit = chart.getElementsAtEventForMode(event, "nearest", { intersect: true }, true);
    return hit.length ? { index: hit[0].index, dataset: hit[0].datasetIndex } : null;
  };
})();
