// The endpoint page: charts of the gateway's ten-second summaries (requests per second, p50/p95/p99 latency, errors,
// one trace per deployment; mirrored traffic dotted), refreshed every 10 s; the Test tab's body prefilled from the
// scoring script's swagger example. Deployment names are text to Plotly (StudioPlotly.text).
(function () {
  "use strict";
  var REFRESH_MS = 10000;
  var layout = function (title, yTitle) {
    return {title: {text: title, font: {size: 13}}, margin: {l: 50, r: 10, t: 30, b: 35}, height: 240,
            yaxis: {title: {text: yTitle}, rangemode: "tozero"}, xaxis: {type: "date"},
            legend: {orientation: "h", y: -0.25}, hovermode: "x unified"};
  };
  function name(series, suffix) {
    return StudioPlotly.text((series.deployment || "(none)") + (series.mirrored ? " (mirror)" : "") + (suffix || ""));
  }
  function draw(data) {
    var series = data.series || [];
    var empty = document.getElementById("charts-empty");
    if (empty) { empty.hidden = series.length > 0; }
    var rps = [], latency = [], errors = [];
    series.forEach(function (s) {
      var dash = s.mirrored ? "dot" : "solid";
      rps.push({x: s.start, y: s.requests_per_second, name: name(s), type: "scatter", mode: "lines",
                line: {dash: dash}, hovertemplate: "%{fullData.name}: %{y} req/s<extra></extra>"});
      [["p50_ms", " p50"], ["p95_ms", " p95"], ["p99_ms", " p99"]].forEach(function (pair) {
        latency.push({x: s.start, y: s[pair[0]], name: name(s, pair[1]), type: "scatter", mode: "lines",
                      line: {dash: dash}, hovertemplate: "%{fullData.name}: %{y} ms<extra></extra>"});
      });
      errors.push({x: s.start, y: s.errors, name: name(s), type: "bar",
                   hovertemplate: "%{fullData.name}: %{y} errors<extra></extra>"});
    });
    var config = {displaylogo: false, responsive: true};
    Plotly.react("chart-rps", rps, layout("Requests per second", "req/s"), config);
    Plotly.react("chart-latency", latency, layout("Latency", "ms"), config);
    Plotly.react("chart-errors", errors, layout("Errors (5xx, 429, 504)", "per 10 s"), config);
  }
  function refresh() {
    var holder = document.getElementById("charts");
    if (!holder || !window.Plotly) { return; }
    fetch(holder.dataset.statsUrl, {credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) { draw(data); } })
      .catch(function () {})
      .finally(function () { setTimeout(refresh, REFRESH_MS); });
  }
  function sample() {
    var form = document.getElementById("test-form");
    var body = document.getElementById("test-body");
    var note = document.getElementById("test-sample-note");
    if (!form || !body || body.value) { return; }
    fetch(form.dataset.sampleUrl, {credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (data && data.found && !body.value) {
          body.value = data.sample;
          note.textContent = "Prefilled from the scoring script's swagger example.";
        } else if (note) {
          note.textContent = "The scoring script declares no example (inference-schema's @input_schema gives one).";
        }
      })
      .catch(function () {});
  }
  function start() { refresh(); sample(); }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();
