// The compare page's charts, drawn with Plotly from the JSON the server embedded (#compare-data):
// one line chart per metric (a trace per run, each run in its own colour; bars across the runs when each logged one
// value) and a parallel-coordinates chart.
(function () {
  "use strict";
  const source = document.getElementById("compare-data");
  if (!source || !window.Plotly) return;
  const data = JSON.parse(source.textContent);
  const runs = new Map(data.runs.map((run) => [run.id, run]));
  const safe = window.StudioPlotly.text;
  const config = { responsive: true, displaylogo: false };
  const font = { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 12 };

  data.charts.forEach((chart, index) => {
    const element = document.querySelector(`[data-chart="${index}"]`);
    if (!element) return;
    if (chart.traces.length && chart.traces.every((trace) => trace.y.length <= 1)) {
      // One value per run (a final accuracy, say): bars across the runs, not a line nobody can read.
      const shown = chart.traces.filter((trace) => trace.y.length === 1);
      Plotly.newPlot(element, [{
        type: "bar", x: shown.map((trace) => safe(runs.get(trace.run).label)), y: shown.map((trace) => trace.y[0]),
        marker: { color: shown.map((trace) => runs.get(trace.run).color) },
        text: shown.map((trace) => (trace.y[0] === null ? "" : Number(Number(trace.y[0]).toPrecision(4)).toString())),
        textposition: "auto", hovertemplate: "%{x}<br>%{meta} %{y}<extra></extra>", meta: safe(chart.metric),
      }], {
        title: { text: safe(chart.metric), font: { size: 14 } }, font,
        margin: { l: 50, r: 10, t: 36, b: 36 }, height: 280, xaxis: { type: "category", automargin: true },
        yaxis: { automargin: true }, showlegend: false, hovermode: "closest",
      }, config);
      element.dataset.kind = "bars";
      return;
    }
    const traces = chart.traces.map((trace) => {
      const run = runs.get(trace.run);
      return {
        type: "scatter", mode: "lines", name: safe(run.label), x: trace.x, y: trace.y,
        line: { color: run.color, width: 1.6 },
        hovertemplate: "%{fullData.name}<br>step %{x}<br>%{meta} %{y}<extra></extra>", meta: safe(chart.metric),
      };
    });
    Plotly.newPlot(element, traces, {
      title: { text: safe(chart.metric), font: { size: 14 } }, font,
      margin: { l: 50, r: 10, t: 36, b: 36 }, height: 280,
      xaxis: { title: { text: "step" } }, showlegend: false, hovermode: "closest",
    }, config);
  });

  const parcoords = data.parcoords;
  const element = document.getElementById("parcoords-chart");
  if (element && parcoords.dimensions.length) {
    const line = parcoords.color.length
      ? { color: parcoords.color, colorscale: "Viridis", showscale: true, colorbar: { title: { text: safe(parcoords.target) } } }
      : { color: "#2f5bea" };
    Plotly.newPlot(element, [{
      type: "parcoords", line,
      dimensions: parcoords.dimensions.map((dimension) => ({ label: safe(dimension.label), values: dimension.values })),
    }], { font, margin: { l: 60, r: 60, t: 50, b: 30 }, height: 360 }, config);
  }
})();
