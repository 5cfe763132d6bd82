// Text handed to Plotly is markup to it: a title or trace name holding <a href=...> becomes a link, <b> bold, <br> a
// line break, and `%{...}` in a hover template is filled in. Every name a user or a script chose goes through
// StudioPlotly.text (shown exactly as written), and hover templates name their trace with %{fullData.name}, never
// by pasting the name in.
(function () {
  "use strict";
  function text(value) {
    return String(value === null || value === undefined ? "" : value)
      .replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }
  window.StudioPlotly = { text: text };
})();
