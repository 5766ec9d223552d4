// A stand-in for Grafana, for the test that renders deploy/grafana/dashboards/sociomile.json in a browser without
// Grafana or Prometheus (tenants/tests/test_dashboard.py): each panel's query is evaluated on ONE scrape of
// /metrics, its PromQL-free equivalent, and drawn with Chart.js as bars per series.
//   - histogram_quantile(q, sum by (tenant, le) (rate(X_bucket[..]))) -> the q-quantile of X's buckets summed
//     per tenant since the start (Prometheus' interpolation inside the bucket);
//   - sum by (labels) (rate(X[..])) -> X summed per those labels since the start (Prometheus draws its rate);
//   - sum by (labels) (X) -> X summed per those labels, now.
// Selectors on `$tenant` match every tenant; other label matchers (channel="outbound") filter.
(function () {
  "use strict";

  function parseExposition(text) {
    const samples = [];
    for (const line of text.split("\n")) {
      if (!line || line.startsWith("#")) continue;
      const match = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/);
      if (!match) continue;
      const labels = {};
      const labelPattern = /(\w+)="((?:[^"\\]|\\.)*)"/g;
      let label;
      while ((label = labelPattern.exec(match[3] || "")) !== null) labels[label[1]] = label[2];
      samples.push({ name: match[1], labels: labels, value: parseFloat(match[4]) });
    }
    return samples;
  }

  function matchers(expr) {
    const found = [];
    const selector = expr.match(/\{([^}]*)\}/);
    if (!selector) return found;
    const pattern = /(\w+)(=~|=)"([^"]*)"/g;
    let match;
    while ((match = pattern.exec(selector[1])) !== null) {
      if (match[3].startsWith("$")) continue; // a dashboard variable: every value
      found.push({ label: match[1], regex: match[2] === "=~", value: match[3] });
    }
    return found;
  }

  function selected(sample, filters) {
    return filters.every((f) => (f.regex ? new RegExp("^(?:" + f.value + ")$").test(sample.labels[f.label] || "")
                                           : sample.labels[f.label] === f.value));
  }

  function legend(format, labels) {
    return format.replace(/\{\{\s*(\w+)\s*\}\}/g, (_, name) => labels[name] || "");
  }

  function quantile(q, buckets) {
    // buckets: [[upper bound, cumulative count]] ascending, +Inf last (histogram_quantile's interpolation).
    const total = buckets[buckets.length - 1][1];
    if (!total) return null;
    const rank = q * total;
    let lowerBound = 0, lowerCount = 0;
    for (const [bound, count] of buckets) {
      if (count >= rank) {
        if (bound === Infinity) return lowerBound;
        return lowerBound + (bound - lowerBound) * ((rank - lowerCount) / ((count - lowerCount) || 1));
      }
      lowerBound = bound; lowerCount = count;
    }
    return lowerBound;
  }

  function evaluate(expr, legendFormat, samples) {
    const filters = matchers(expr);
    const byMatch = expr.match(/by \(([^)]*)\)/);
    const by = byMatch ? byMatch[1].split(",").map((s) => s.trim()).filter((s) => s !== "le") : [];
    const histogram = expr.match(/histogram_quantile\(([\d.]+),.*?(sociomile_\w+)_bucket/);
    if (histogram) {
      const q = parseFloat(histogram[1]);
      const groups = {};
      for (const s of samples) {
        if (s.name !== histogram[2] + "_bucket" || !selected(s, filters)) continue;
        const key = by.map((l) => s.labels[l]).join("\u0000");
        const bound = s.labels.le === "+Inf" ? Infinity : parseFloat(s.labels.le);
        groups[key] = groups[key] || { labels: s.labels, bounds: {} };
        groups[key].bounds[bound] = (groups[key].bounds[bound] || 0) + s.value;
      }
      return Object.values(groups).map((g) => {
        const buckets = Object.entries(g.bounds).map(([b, c]) => [b === "Infinity" ? Infinity : parseFloat(b), c])
          .sort((a, b) => a[0] - b[0]);
        return { label: legend(legendFormat, g.labels), value: quantile(q, buckets) };
      }).filter((point) => point.value !== null);
    }
    const name = expr.match(/(sociomile_\w+)/)[1];
    const groups = {};
    for (const s of samples) {
      if (s.name !== name || !selected(s, filters)) continue;
      const key = by.map((l) => s.labels[l]).join("\u0000");
      groups[key] = groups[key] || { labels: s.labels, value: 0 };
      groups[key].value += s.value;
    }
    return Object.values(groups).map((g) => ({ label: legend(legendFormat, g.labels), value: g.value }));
  }

  window.renderDashboard = function (dashboard, metricsText, container) {
    const samples = parseExposition(metricsText);
    const heading = document.createElement("h1");
    heading.textContent = dashboard.title + " (preview: one scrape of /metrics, not Grafana)";
    container.appendChild(heading);
    const grid = document.createElement("div");
    grid.className = "grid";
    container.appendChild(grid);
    const rendered = [];
    for (const panel of dashboard.panels) {
      const target = panel.targets[0];
      const points = evaluate(target.expr, target.legendFormat, samples);
      const box = document.createElement("section");
      box.className = "panel" + (panel.gridPos.w === 24 ? " wide" : "");
      const title = document.createElement("h2");
      title.textContent = panel.title;
      const query = document.createElement("code");
      query.textContent = target.expr;
      const canvas = document.createElement("canvas");
      box.append(title, canvas, query);
      grid.appendChild(box);
      new window.Chart(canvas, {
        type: "bar",
        data: { labels: points.map((p) => p.label), datasets: [{ label: panel.fieldConfig.defaults.unit,
          data: points.map((p) => p.value), backgroundColor: "#3b82f6" }] },
        options: { animation: false, indexAxis: "y", plugins: { legend: { display: false } },
                   scales: { x: { beginAtZero: true } } },
      });
      rendered.push({ title: panel.title, points: points });
    }
    return rendered;
  };
})();
