// The model page's chart: each shared metric of the versions' source runs, version by version. Metric names are
// text for Plotly (StudioPlotly.text), and the hover names its trace with %{fullData.name}.
(function () {
  "use strict";
  function draw() {
    var holder = document.getElementById("version-metrics-chart");
    var source = document.getElementById("version-metrics-data");
    if (!holder || !source || !window.Plotly) { return; }
    var data = JSON.parse(source.textContent);
    var traces = Object.keys(data).map(function (name) {
      return {x: data[name].x, y: data[name].y, name: StudioPlotly.text(name), mode: "lines+markers", type: "scatter",
              hovertemplate: "%{fullData.name}<br>version %{x}: %{y}<extra></extra>"};
    });
    Plotly.newPlot(holder, traces, {
      margin: {l: 50, r: 20, t: 10, b: 40}, xaxis: {title: {text: "version"}, dtick: 1},
      legend: {orientation: "h"}, hovermode: "closest"
    }, {displaylogo: false, responsive: true});
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", draw); } else { draw(); }
})();
