// The tenant admin's dashboard: draws the figures the page embeds (#reports-figures) with Chart.js.
(function () {
  "use strict";
  var figures = JSON.parse(document.getElementById("reports-figures").textContent);
  var minutes = function (values) {
    return values.map(function (seconds) { return seconds === null ? null : Math.round(seconds / 6) / 10; });
  };
  var common = { animation: false, responsive: true, maintainAspectRatio: false };
  function draw(id, config) {
    var canvas = document.getElementById(id);
    canvas.parentNode.style.height = "260px";
    new Chart(canvas, Object.assign({ options: common }, config));
    canvas.dataset.rendered = "true";
  }
  draw("chart-volume", {
    type: "bar",
    data: {
      labels: figures.days,
      datasets: [
        { label: "created", data: figures.created, backgroundColor: "#417690" },
        { label: "resolved", data: figures.resolved, backgroundColor: "#79aec8" },
      ],
    },
  });
  draw("chart-times", {
    type: "line",
    data: {
      labels: figures.days,
      datasets: [
        { label: "median first response", data: minutes(figures.first_response_median), borderColor: "#ba2121", spanGaps: true },
        { label: "median waiting time", data: minutes(figures.wait_median), borderColor: "#417690", spanGaps: true },
      ],
    },
  });
  draw("chart-agents", {
    type: "bar",
    data: {
      labels: figures.agents,
      datasets: [
        { label: "resolved", data: figures.agent_resolved, backgroundColor: "#417690" },
        { label: "messages", data: figures.agent_messages, backgroundColor: "#79aec8" },
      ],
    },
  });
})();
