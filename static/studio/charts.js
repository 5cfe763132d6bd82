// Run page charts (Plotly) and sortable tables, for the metrics tab rendered by runs/telemetry_views.py.
//
// A chart card (`[data-chart]`) either fetches a scalar series from `data-url` (JSON: x, y, nonfinite, count,
// shown, final; already downsampled by the server) or reads embedded JSON (`data-source` = id of a
// <script type="application/json"> holding {traces: [{name, x, y, nonfinite}]}).
// Per chart: x-axis choice (step / relative / wall-clock time), log scale, and smoothing (an exponential moving
// average, TensorBoard style, drawn over the raw trace shown faintly). Non-finite values arrive as null with a
// `nonfinite` list and are drawn as markers along the top, middle or bottom of the plot, with a note.
// A scalar series with one point shows as a number; a table chart may be lines or bars (the user's choice) or a
// heatmap (a square table, such as a confusion matrix, with its column names and row labels along the axes).
// While the run goes, a `studio:metric` event (the run's live stream, through live_console.js) reloads the named
// series at once, or the tab's layout when a series is new; visible scalar charts also refresh every 2 s; they stop when the run is final (from the
// section's data-run-final, a `studio:status` event on <body>, or `final` in the data).
(function () {
  "use strict";
  const FINAL_STATES = ["Completed", "Failed", "Canceled"];
  const REFRESH_MS = 2000;
  const COLORS = ["#2f5bea", "#e8590c", "#2b8a3e", "#c2255c", "#6741d9", "#0b7285", "#a87b00", "#495057"];
  const X_TITLES = { step: "step", relative: "seconds since start", time: "", index: "index" };
  const safe = window.StudioPlotly.text;
  // Chart settings by chart key, so a re-rendered tab (new series appeared) keeps what the user chose.
  const chosen = new Map();
  const charts = new Set();
  let runFinal = true;
  let timer = null;
  let observer = null;

  function settingsFor(key) {
    if (!chosen.has(key)) chosen.set(key, { x: "step", log: false, smooth: 0, type: "line" });
    return chosen.get(key);
  }

  // Exponential moving average with TensorBoard's debiasing; null (non-finite or missing) stays a gap.
  function smooth(y, weight) {
    if (!weight) return y;
    const out = new Array(y.length);
    let last = 0;
    let n = 0;
    for (let i = 0; i < y.length; i++) {
      const v = y[i];
      if (v === null || typeof v !== "number" || !isFinite(v)) { out[i] = null; continue; }
      last = last * weight + (1 - weight) * v;
      n += 1;
      out[i] = last / (1 - Math.pow(weight, n));
    }
    return out;
  }

  function plural(n, word) { return n + " " + word + (n === 1 ? "" : "s"); }
  function fmt(n) { return Number(n).toLocaleString("en-US"); }

  function nonfiniteNote(traces) {
    const counts = {};
    traces.forEach(function (t) {
      (t.nonfinite || []).forEach(function (p) { counts[p.value] = (counts[p.value] || 0) + 1; });
    });
    const parts = ["NaN", "Infinity", "-Infinity"].filter(function (k) { return counts[k]; })
      .map(function (k) { return plural(counts[k], k + " value"); });
    return parts.length ? parts.join(", ") + " (✕ markers)" : "";
  }

  function buildTraces(chart) {
    const s = chart.settings;
    const out = [];
    const multi = chart.legend || chart.traces.length > 1;
    chart.traces.forEach(function (t, i) {
      const color = COLORS[i % COLORS.length];
      if (s.type === "bar") {
        out.push({ type: "bar", x: t.x, y: t.y, name: safe(t.name || chart.title), marker: { color: color }, showlegend: multi });
        return;
      }
      const few = t.x.length < 3;
      const mode = few ? "lines+markers" : "lines";
      const name = safe(t.name || chart.title);
      if (s.smooth > 0) {
        out.push({ type: "scatter", mode: mode, x: t.x, y: t.y, name: name + " (raw)", showlegend: false,
          line: { color: color, width: 1 }, opacity: 0.25, hoverinfo: "skip" });
        out.push({ type: "scatter", mode: mode, x: t.x, y: smooth(t.y, s.smooth), name: name,
          line: { color: color, width: 2 }, showlegend: multi });
      } else {
        out.push({ type: "scatter", mode: mode, x: t.x, y: t.y, name: name, line: { color: color, width: 1.5 },
          showlegend: multi });
      }
      const bad = t.nonfinite || [];
      if (bad.length) {
        out.push({
          type: "scatter", mode: "markers", yaxis: "y2", showlegend: false, name: name + " non-finite",
          x: bad.map(function (p) { return p.x; }),
          y: bad.map(function (p) { return p.value === "Infinity" ? 0.97 : p.value === "-Infinity" ? 0.03 : 0.5; }),
          text: bad.map(function (p) { return p.value; }),
          hovertemplate: "%{text} at %{x}<extra>%{fullData.name}</extra>",
          marker: { symbol: "x", size: 8, color: "#c62828" },
        });
      }
    });
    return out;
  }

  function heatmapFigure(chart) {
    const h = chart.heatmap;
    const labels = h.x.map(function (x) { return safe(String(x)); });
    const rows = h.y.map(function (y) { return safe(String(y)); });
    const trace = { type: "heatmap", z: h.z, x: labels, y: rows, colorscale: "Blues", hoverongaps: false,
      texttemplate: h.z.length <= 20 ? "%{z}" : "", hovertemplate: "%{y} · %{x}: %{z}<extra></extra>" };
    const size = Math.min(640, Math.max(320, 36 * rows.length + 120));
    return [[trace], {
      height: size, margin: { l: 64, r: 12, t: 8, b: 56 },
      xaxis: { type: "category", title: { text: safe(h.x_title || "") }, automargin: true, side: "bottom" },
      yaxis: { type: "category", title: { text: safe(h.y_title || "") }, automargin: true, autorange: "reversed" },
    }];
  }

  function layout(chart) {
    const s = chart.settings;
    const xMode = chart.url ? s.x : "index";
    const legend = chart.legend || chart.traces.length > 1;
    return {
      // Tall enough to read, and taller when a legend lists many columns: a legend is never cut.
      height: Math.max(340, legend ? 22 * chart.traces.length + 80 : 0),
      margin: { l: 56, r: 12, t: 8, b: 40 },
      showlegend: legend,
      legend: { orientation: "v", x: 1.02, xanchor: "left", y: 1, yanchor: "top" },
      barmode: "group",
      hovermode: "closest",
      xaxis: { type: xMode === "time" ? "date" : "linear", title: { text: safe(chart.xTitle || X_TITLES[xMode] || ""), standoff: 4 },
        automargin: true },
      yaxis: { type: s.log ? "log" : "linear", automargin: true, exponentformat: "e" },
      yaxis2: { overlaying: "y", range: [0, 1], visible: false, fixedrange: true },
      uirevision: chart.key + "|" + xMode + "|" + s.log,
    };
  }

  function drawNumber(chart, plot) {
    // One point: the number itself (a line chart of one point has an axis from −1 to 1 and says nothing).
    if (window.Plotly && plot.classList.contains("js-plotly-plot")) window.Plotly.purge(plot);
    plot.classList.add("stat");
    plot.textContent = "";
    const value = document.createElement("div");
    value.className = "stat-number";
    const y = chart.traces[0].y[0];
    const bad = (chart.traces[0].nonfinite || [])[0];
    value.textContent = y === null || y === undefined ? (bad ? bad.value : "–") : Number(Number(y).toPrecision(6)).toString();
    const at = document.createElement("div");
    at.className = "stat-at";
    at.textContent = chart.settings.x === "step" ? "at step " + chart.traces[0].x[0] : "one value";
    plot.appendChild(value);
    plot.appendChild(at);
  }

  function draw(chart) {
    const plot = chart.el.querySelector("[data-role=plot]");
    const note = chart.el.querySelector("[data-role=note]");
    if (chart.url && chart.meta && chart.meta.count === 1 && chart.traces.length === 1 && chart.traces[0].x.length === 1) {
      note.textContent = "";
      drawNumber(chart, plot);
      return;
    }
    if (plot.classList.contains("stat")) { plot.classList.remove("stat"); plot.textContent = ""; }
    if (!window.Plotly) { note.textContent = "Charts need plotly.min.js, which did not load."; return; }
    if (chart.heatmap) {
      const figure = heatmapFigure(chart);
      note.textContent = "";
      try { window.Plotly.react(plot, figure[0], figure[1], { responsive: true, displaylogo: false }); }
      catch (err) { note.textContent = "Could not draw this chart: " + err; }
      return;
    }
    const notes = [];
    if (chart.columns && chart.columns > chart.traces.length) {
      notes.push("showing " + chart.traces.length + " of " + chart.columns + " numeric columns");
    }
    if (chart.meta && chart.meta.shown < chart.meta.count) {
      notes.push("showing " + fmt(chart.meta.shown) + " of " + fmt(chart.meta.count) + " points (min and max kept)");
    }
    const bad = nonfiniteNote(chart.traces);
    if (bad) notes.push(bad);
    if (!chart.traces.some(function (t) { return t.x.length; })) notes.push("no points yet");
    if (chart.settings.log) notes.push("log scale hides values ≤ 0");
    note.textContent = notes.join(" · ");
    try {
      window.Plotly.react(plot, buildTraces(chart), layout(chart), { responsive: true, displaylogo: false });
    } catch (err) {
      note.textContent = "Could not draw this chart: " + err;
    }
  }

  function summarize(chart, data) {
    const el = chart.el.querySelector("[data-role=summary]");
    if (!el) return;
    const last = data.last === null || data.last === undefined ? "–"
      : typeof data.last === "number" ? Number(data.last.toPrecision(6)).toString() : String(data.last);
    el.textContent = "last " + last + " · " + fmt(data.count) + (data.count === 1 ? " point" : " points");
  }

  function load(chart) {
    if (chart.busy) { chart.again = true; return Promise.resolve(); }
    chart.busy = true;
    const url = chart.url + "?x=" + encodeURIComponent(chart.settings.x);
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (data) {
        chart.meta = data;
        chart.traces = [{ name: data.name, x: data.x, y: data.y, nonfinite: data.nonfinite }];
        summarize(chart, data);
        draw(chart);
        if (data.final) finish();
      })
      .catch(function (err) {
        chart.el.querySelector("[data-role=note]").textContent = "Could not load the data (" + err.message + ").";
      })
      .finally(function () {
        chart.busy = false;
        if (chart.again) { chart.again = false; load(chart); }
      });
  }

  function refresh() {
    charts.forEach(function (chart) {
      if (!document.body.contains(chart.el)) {
        charts.delete(chart);
        if (observer) observer.unobserve(chart.el);
        return;
      }
      if (!chart.url) return;
      if (chart.visible) load(chart);
      else chart.stale = true; // loaded when it scrolls into view
    });
  }

  function startRefreshing() {
    if (!runFinal && timer === null) timer = setInterval(refresh, REFRESH_MS);
  }

  function finish() {
    if (runFinal) return;
    runFinal = true;
    if (timer !== null) { clearInterval(timer); timer = null; }
  }

  function setupChart(el) {
    el.dataset.ready = "1";
    const chart = { el: el, key: el.dataset.key || "", url: el.dataset.url || "", traces: [], meta: null,
      busy: false, visible: !("IntersectionObserver" in window), title: "" };
    const title = el.querySelector(".chart-title");
    chart.title = title ? title.textContent : "";
    chart.settings = settingsFor(chart.key);
    const xSelect = el.querySelector("[data-role=x]");
    const logBox = el.querySelector("[data-role=log]");
    const slider = el.querySelector("[data-role=smooth]");
    const sliderValue = el.querySelector("[data-role=smooth-value]");
    if (xSelect) {
      xSelect.value = chart.settings.x;
      xSelect.addEventListener("change", function () { chart.settings.x = xSelect.value; load(chart); });
    }
    const typeSelect = el.querySelector("[data-role=type]");
    if (typeSelect) {
      typeSelect.value = chart.settings.type;
      typeSelect.addEventListener("change", function () { chart.settings.type = typeSelect.value; draw(chart); });
    }
    if (logBox) {
      logBox.checked = chart.settings.log;
      logBox.addEventListener("change", function () { chart.settings.log = logBox.checked; draw(chart); });
    }
    if (slider) {
      slider.value = String(chart.settings.smooth);
      sliderValue.textContent = chart.settings.smooth.toFixed(2);
      slider.addEventListener("input", function () {
        chart.settings.smooth = Math.min(0.99, Math.max(0, parseFloat(slider.value) || 0));
        sliderValue.textContent = chart.settings.smooth.toFixed(2);
        draw(chart);
      });
    }
    if (chart.url) {
      // Fetched when it comes near the viewport: a run with a hundred series does not ask for all of them at once.
      if (observer) chart.stale = true;
      else load(chart);
    } else {
      const source = document.getElementById(el.dataset.source);
      try {
        const data = source ? JSON.parse(source.textContent) : {};
        chart.traces = data.traces || [];
        chart.xTitle = data.x_title || "";
        chart.legend = !!data.legend;
        chart.heatmap = data.heatmap || null;
        chart.columns = data.columns || 0;
      } catch (err) {
        chart.traces = [];
      }
      draw(chart);
    }
    charts.add(chart);
    if (observer) observer.observe(el);
  }

  // Client-side sort: a click on a header sorts by that column, again to reverse. Numbers (data-sort) sort as
  // numbers before text; empty cells last.
  function sortKey(cell) {
    if (!cell) return { kind: 2, value: "" };
    if (cell.dataset.sort !== undefined && cell.dataset.sort !== "") return { kind: 0, value: Number(cell.dataset.sort) };
    const text = cell.textContent.trim();
    return text ? { kind: 1, value: text.toLowerCase() } : { kind: 2, value: "" };
  }

  function compare(a, b) {
    if (a.kind !== b.kind) return a.kind - b.kind;
    if (a.value < b.value) return -1;
    if (a.value > b.value) return 1;
    return 0;
  }

  function setupTable(table) {
    table.dataset.ready = "1";
    const headers = Array.from(table.tHead ? table.tHead.rows[0].cells : []);
    headers.forEach(function (th, column) {
      th.tabIndex = 0;
      th.classList.add("sort-head");
      function sort() {
        const ascending = th.getAttribute("aria-sort") !== "ascending";
        headers.forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        const body = table.tBodies[0];
        const rows = Array.from(body.rows).map(function (row, i) { return { row: row, i: i, key: sortKey(row.cells[column]) }; });
        rows.sort(function (a, b) {
          const bothEmpty = a.key.kind === 2 && b.key.kind === 2;
          const order = bothEmpty ? 0 : a.key.kind === 2 ? 1 : b.key.kind === 2 ? -1 : compare(a.key, b.key) * (ascending ? 1 : -1);
          return order || a.i - b.i;
        });
        const fragment = document.createDocumentFragment();
        rows.forEach(function (item) { fragment.appendChild(item.row); });
        body.appendChild(fragment);
      }
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); } });
    });
  }

  function init(root) {
    const section = root.querySelector ? root.querySelector("[data-run-final]") : null;
    if (section) {
      runFinal = section.dataset.runFinal === "true";
    }
    root.querySelectorAll("[data-chart]:not([data-ready])").forEach(setupChart);
    root.querySelectorAll("table.sortable:not([data-ready])").forEach(setupTable);
    startRefreshing();
  }

  if ("IntersectionObserver" in window) {
    observer = new IntersectionObserver(function (items) {
      items.forEach(function (item) {
        charts.forEach(function (chart) {
          if (chart.el !== item.target) return;
          chart.visible = item.isIntersecting;
          if (chart.visible && chart.stale) { chart.stale = false; load(chart); }
        });
      });
    }, { rootMargin: "400px" });
  }

  document.body.addEventListener("studio:status", function (e) {
    const status = e.detail && e.detail.status;
    if (FINAL_STATES.indexOf(status) !== -1 && !runFinal) {
      refresh(); // one last time: the final points
      finish();
    }
  });
  // Live data (runs/live.py): reload the series named, at once; a name without a chart on the page (a new series, a
  // table or row entry, an image) or a child run that changed asks the tab for its layout, at most about once a second.
  let layoutTimer = null;
  let layoutAt = 0;
  function requestLayout() {
    if (layoutTimer !== null) return;
    const wait = Math.max(0, layoutAt + 1000 - Date.now());
    layoutTimer = setTimeout(function () {
      layoutTimer = null;
      layoutAt = Date.now();
      document.body.dispatchEvent(new CustomEvent("studio:layout"));
    }, wait);
  }
  document.body.addEventListener("studio:metric", function (e) {
    const names = String((e.detail && e.detail.names) || "").split(",").filter(Boolean);
    let unknown = false;
    names.forEach(function (name) {
      let found = false;
      charts.forEach(function (chart) {
        if (chart.key !== "scalar:" + name || !chart.url || !document.body.contains(chart.el)) return;
        found = true;
        if (chart.visible) load(chart);
        else chart.stale = true;
      });
      if (!found) unknown = true;
    });
    if (unknown) requestLayout();
  });
  document.body.addEventListener("studio:child", requestLayout);
  document.body.addEventListener("htmx:afterSwap", function (e) { init(e.detail.target || document); });
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { init(document); });
  } else {
    init(document);
  }
})();
