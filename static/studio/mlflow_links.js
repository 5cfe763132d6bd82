// An MLflow client prints links into MLflow's own UI, <tracking URI>/#/experiments/3/runs/<run id>: a browser never
// sends the part after #, so this page reads it and goes on to the studio's page for that run or experiment.
(function () {
  "use strict";
  var found = /^#\/experiments\/([0-9]+)(?:\/runs\/([A-Za-z0-9_-]{1,64}))?/.exec(window.location.hash);
  if (!found) {
    return;
  }
  var base = window.location.pathname.replace(/\/?$/, "/");
  window.location.replace(found[2] ? base + "runs/" + encodeURIComponent(found[2]) + "/"
                                   : base + "experiments/" + encodeURIComponent(found[1]) + "/");
})();
