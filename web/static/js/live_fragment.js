/* Pages rendered on the server that must follow state live: an element with
   data-live-rooms="dags" (rooms to join) and data-live-kinds="run" (event kinds that matter) is
   redrawn from a fresh copy of the page when such an event arrives (debounced), and after every
   reconnect. Used where a page is a table of rows the server already knows how to draw. */
(function () {
  "use strict";
  const hf = window.hf;
  const node = document.querySelector("[data-live-rooms]");
  if (!node || !node.id) return;
  const rooms = node.dataset.liveRooms.split(",");
  const kinds = new Set((node.dataset.liveKinds || "run").split(","));

  async function redraw() {
    let text;
    try {
      const response = await fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (!response.ok) return;
      text = await response.text();
    } catch (e) { return; }
    const fresh = new DOMParser().parseFromString(text, "text/html").getElementById(node.id);
    if (fresh) node.replaceChildren.apply(node, Array.from(fresh.childNodes));
  }
  const redrawSoon = hf.debounce(redraw, 250);

  hf.live(rooms, function (events) {
    if (events.some(function (e) { return kinds.has(e.kind); })) redrawSoon();
  }, redraw);
})();
