// The run page (templates/runs/run_detail.html): its tabs, the duration that ticks while the run is active, and the
// tags and child-run count that change as the script reports them (events from live_console.js's one connection).
//
// Tabs: a click shows the tab's pane (CSS from #run-panes[data-active]), puts `?tab=<name>` in the URL as a history
// entry, and fires `studio:show` on what in the pane loads on demand (htmx `hx-trigger="studio:show once"`). Back and
// forward move between tabs; a reload opens the tab the URL names (the server renders it active). An old `#logs` or
// `#metrics` link opens its tab.
(function () {
  "use strict";
  const panes = document.getElementById("run-panes");
  const tabs = Array.from(document.querySelectorAll(".run-tabs a[data-tab]"));
  const LEGACY = { logs: "console", models: "overview", parameters: "overview", source: "overview" };

  function tabNames() { return tabs.map(function (t) { return t.dataset.tab; }); }

  function show(name) {
    if (!panes) return;
    if (tabNames().indexOf(name) === -1) name = "overview";
    panes.dataset.active = name;
    tabs.forEach(function (t) { t.setAttribute("aria-selected", t.dataset.tab === name ? "true" : "false"); });
    panes.querySelectorAll(":scope > .pane").forEach(function (pane) {
      if ((pane.dataset.pane || "").split(" ").indexOf(name) === -1) return;
      const lazy = Array.from(pane.querySelectorAll("[hx-trigger*='studio:show']"));
      if ((pane.getAttribute("hx-trigger") || "").indexOf("studio:show") !== -1) lazy.unshift(pane);
      if (window.htmx) lazy.forEach(function (el) { window.htmx.trigger(el, "studio:show"); });
    });
    if (name === "console") {
      const consoleEl = document.getElementById("console");
      if (consoleEl) consoleEl.scrollTop = consoleEl.scrollHeight;
    }
    window.dispatchEvent(new Event("resize")); // Plotly charts drawn while hidden take their width now
  }

  function tabFromUrl() {
    const params = new URLSearchParams(window.location.search);
    if (params.get("tab")) return params.get("tab");
    const hash = window.location.hash.replace(/^#/, "");
    return hash ? LEGACY[hash] || hash : "overview";
  }

  function urlFor(name) {
    const url = new URL(window.location.href);
    url.searchParams.set("tab", name);
    url.hash = "";
    return url.pathname + url.search;
  }

  if (panes) {
    tabs.forEach(function (tab) {
      tab.addEventListener("click", function (e) {
        if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
        e.preventDefault();
        if (panes.dataset.active === tab.dataset.tab) return;
        history.pushState({ tab: tab.dataset.tab }, "", urlFor(tab.dataset.tab));
        show(tab.dataset.tab);
      });
    });
    window.addEventListener("popstate", function () { show(tabFromUrl()); });
    const start = tabFromUrl();
    if (start !== panes.dataset.active || window.location.hash) {
      history.replaceState({ tab: start }, "", urlFor(tabNames().indexOf(start) === -1 ? "overview" : start));
      document.addEventListener("DOMContentLoaded", function () { setTimeout(function () { show(start); }, 0); }, { once: true });
    }
  }

  // Duration: counted here from the start the server sent, corrected for the difference between the clocks.
  function formatDuration(seconds) {
    if (seconds < 60) return seconds.toFixed(1) + "s";
    const whole = Math.floor(seconds);
    const h = Math.floor(whole / 3600);
    const m = Math.floor((whole % 3600) / 60);
    const s = whole % 60;
    const pad = function (n) { return n < 10 ? "0" + n : String(n); };
    return h ? h + "h " + pad(m) + "m " + pad(s) + "s" : m + "m " + pad(s) + "s";
  }
  function tick() {
    const el = document.getElementById("run-duration");
    if (!el || !el.dataset.started) return;
    const now = Date.now() / 1000;
    if (el.dataset.clientAt === undefined) el.dataset.clientAt = String(now);
    const skew = parseFloat(el.dataset.now) - parseFloat(el.dataset.clientAt);
    el.textContent = formatDuration(Math.max(0, now + skew - parseFloat(el.dataset.started)));
  }
  setInterval(tick, 200);

  // Tags, as the script sets them.
  document.body.addEventListener("studio:tags", function (e) {
    const cell = document.getElementById("run-tags");
    let tags;
    try { tags = JSON.parse(e.detail.tags); } catch (err) { return; }
    if (!cell || !tags) return;
    cell.textContent = "";
    Object.keys(tags).forEach(function (key) {
      const span = document.createElement("span");
      span.className = "tag";
      span.textContent = tags[key] ? key + ": " + tags[key] : key;
      cell.appendChild(span);
      cell.appendChild(document.createTextNode(" "));
    });
    if (!cell.childNodes.length) {
      const none = document.createElement("span");
      none.className = "muted";
      none.textContent = "none";
      cell.appendChild(none);
    }
  });

  // The children tab's count follows the telemetry partial (which a `child` event refreshes, see charts.js).
  document.body.addEventListener("htmx:afterSwap", function () {
    const total = document.querySelector("#children[data-total]");
    const count = document.getElementById("child-count");
    if (total && count) count.textContent = total.dataset.total;
  });
})();
