/* Tollgate dashboard behaviour: copy buttons, confirmations and the usage charts.
   Loaded as a file (no inline script), so a strict content security policy can apply. */
(function () {
  "use strict";

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var field = document.getElementById(button.getAttribute("data-copy"));
    if (!field) return;
    var done = function () {
      var text = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = text; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(field.value).then(done, function () {
        field.select(); document.execCommand("copy"); done();
      });
    } else {
      field.select(); document.execCommand("copy"); done();
    }
  });

  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  });

  document.addEventListener("change", function (event) {
    if (event.target.matches("[data-autosubmit]")) event.target.form.submit();
  });

  // A live page (data-refresh="SECONDS" on any element, e.g. the breakers of the staff
  // backends page) reloads itself while it is visible.
  var live = document.querySelector("[data-refresh]");
  if (live) {
    var every = Math.max(1, parseInt(live.getAttribute("data-refresh"), 10) || 5) * 1000;
    setInterval(function () { if (!document.hidden) window.location.reload(); }, every);
  }

  var source = document.getElementById("usage-data");
  if (!source || typeof Chart === "undefined") return;
  var data = JSON.parse(source.textContent);
  var palette = ["#2f5bea", "#12b76a", "#f79009", "#ee46bc", "#7a5af8", "#06aed4", "#f04438",
                 "#667085", "#84cc16", "#a15c07"];
  function draw(canvasId, series, money) {
    var canvas = document.getElementById(canvasId);
    if (!canvas) return;
    var names = Object.keys(series);
    new Chart(canvas, {
      type: "bar",
      data: {
        labels: data.days,
        datasets: names.map(function (name, i) {
          return { label: name, data: series[name], backgroundColor: palette[i % palette.length],
                   borderWidth: 0 };
        })
      },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
        scales: {
          x: { stacked: true, grid: { display: false } },
          y: { stacked: true, beginAtZero: true,
               ticks: money ? { callback: function (v) { return "$" + Number(v.toPrecision(3)); } } : {} }
        }
      }
    });
  }
  draw("chart-requests", data.requests, false);
  draw("chart-tokens", data.tokens, false);
  draw("chart-cost", data.cost, true);
})();
