/* Doorstep console, Performance section: delivery figures from GET /v1/analytics/deliveries (the session cookie,
   as the rest of the console) drawn with uPlot (vendored), each chart also as a table, filters by dates and
   driver in a form (keyboard first), the CSV of the same rows as a download link. Stores nothing. */
(function () {
  "use strict";

  var body = document.body;
  var API = body.getAttribute("data-api") || "";
  var LOCALE = body.getAttribute("data-locale") || "en";
  var MESSAGES = {};
  try { MESSAGES = JSON.parse(body.getAttribute("data-messages") || "{}"); } catch (e) { MESSAGES = {}; }
  var MAX_DAYS = 92;
  var COLUMNS = ["delivered", "failed", "returned", "on_time_rate", "delivered_early", "delivered_late",
                 "first_attempt_success_rate",
                 "proof_compliance_rate", "far_from_stop_rate", "stops_per_hour_on_duty", "rating_average",
                 "ratings_count"];
  var RATES = { on_time_rate: 1, first_attempt_success_rate: 1, proof_compliance_rate: 1, far_from_stop_rate: 1 };
  var plots = {};
  var driverNames = {};

  function t(key) { return MESSAGES[key] || key; }
  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }
  function iso(d) {
    function two(n) { return (n < 10 ? "0" : "") + n; }
    return d.getFullYear() + "-" + two(d.getMonth() + 1) + "-" + two(d.getDate());
  }
  var pct = new Intl.NumberFormat(LOCALE, { style: "percent", maximumFractionDigits: 1 });
  var num = new Intl.NumberFormat(LOCALE, { maximumFractionDigits: 2 });
  function show(name, value) {
    if (value === null || value === undefined) { return "–"; }
    return RATES[name] ? pct.format(value) : num.format(value);
  }

  function get(path, accept) {
    return window.fetch(API + path, { headers: { "Accept": accept || "application/json" },
                                      credentials: "same-origin", cache: "no-store" })
      .then(function (res) {
        return res.json().then(function (data) { return { status: res.status, data: data }; },
                               function () { return { status: res.status, data: null }; });
      });
  }
  /* every page of a listing (the figures are at most 92 days or a few hundred drivers) */
  function all(path) {
    var rows = [];
    function page(cursor) {
      return get(path + (cursor ? "&cursor=" + encodeURIComponent(cursor) : "")).then(function (r) {
        if (r.status !== 200 || !r.data) { throw new Error("status " + r.status); }
        rows = rows.concat(r.data.items || []);
        return r.data.next_cursor ? page(r.data.next_cursor) : rows;
      });
    }
    return page(null);
  }

  function query(groupBy) {
    var q = "?from=" + $("perf-from").value + "&to=" + $("perf-to").value + "&group_by=" + groupBy + "&limit=500";
    var driver = $("perf-driver").value;
    return q + (driver && groupBy !== "zone" ? "&driver_id=" + encodeURIComponent(driver) : "");
  }

  function table(node, rows, firstColumn, label) {
    clear(node);
    var head = el("tr");
    [firstColumn].concat(COLUMNS).forEach(function (name) {
      var th = el("th", null, t("console.perf.col." + name));
      th.scope = "col";
      head.appendChild(th);
    });
    var thead = el("thead");
    thead.appendChild(head);
    node.appendChild(thead);
    var tbody = el("tbody");
    rows.forEach(function (row) {
      var tr = el("tr");
      var th = el("th", null, label(row.group));
      th.scope = "row";
      tr.appendChild(th);
      COLUMNS.forEach(function (name) { tr.appendChild(el("td", null, show(name, row[name]))); });
      tbody.appendChild(tr);
    });
    node.appendChild(tbody);
  }

  function totals(rows) {
    var sum = { delivered: 0, failed: 0, returned: 0, on_time: 0, first_attempts: 0, ratings_count: 0 };
    rows.forEach(function (r) { Object.keys(sum).forEach(function (k) { sum[k] += r[k] || 0; }); });
    var dl = $("perf-totals");
    clear(dl);
    ["delivered", "failed", "returned", "ratings_count"].forEach(function (k) {
      dl.appendChild(el("dt", null, t("console.perf.col." + k)));
      dl.appendChild(el("dd", null, num.format(sum[k])));
    });
  }

  /* one uPlot chart: over days (time x axis), or per driver (bars, the x axis naming each driver) */
  function chart(id, rows, series, options) {
    var node = $(id);
    var opts = options || {};
    if (plots[id]) { plots[id].destroy(); delete plots[id]; }
    clear(node);
    if (typeof window.uPlot !== "function" || !rows.length) { return; }
    var xs = opts.labels ? rows.map(function (r, i) { return i; })
                         : rows.map(function (r) { return Date.parse(r.group + "T12:00:00Z") / 1000; });
    var data = [xs].concat(series.map(function (s) { return rows.map(s.value); }));
    var width = Math.max(280, Math.min(node.clientWidth || 600, 900));
    var bars = opts.labels && window.uPlot.paths && window.uPlot.paths.bars;
    var x = opts.labels ? { values: function (u, ticks) {
      return ticks.map(function (i) { return Number.isInteger(i) && opts.labels[i] !== undefined ? opts.labels[i] : ""; });
    } } : {};
    plots[id] = new window.uPlot({
      width: width, height: 220,
      series: [{}].concat(series.map(function (s, k) {
        var line = { label: s.label, stroke: s.colour, width: 2, points: { show: !bars } };
        if (bars) { line.fill = s.colour; line.paths = bars({ size: [0.35, 40], align: k === 0 ? -1 : 1 }); }
        return line;
      })),
      axes: [x, {}],
      scales: { x: opts.labels ? { time: false, range: [-0.5, rows.length - 0.5] } : { time: true },
                y: { range: opts.yRange || function (u, min, max) { return [0, Math.max(1, max)]; } } },
      legend: { live: false }, cursor: { show: false }
    }, data, node);
  }

  function draw(days, drivers) {
    totals(days);
    chart("perf-volume", days, [
      { label: t("console.perf.col.delivered"), colour: "#15803d", value: function (r) { return r.delivered; } },
      { label: t("console.perf.col.failed"), colour: "#b91c1c", value: function (r) { return r.failed; } },
      { label: t("console.perf.col.returned"), colour: "#6b7280", value: function (r) { return r.returned; } }]);
    function percent(name) {
      return function (r) { return r[name] === null ? null : Math.round(r[name] * 1000) / 10; };
    }
    chart("perf-rates", days, [
      { label: t("console.perf.col.on_time_rate"), colour: "#1d4ed8", value: percent("on_time_rate") },
      { label: t("console.perf.col.first_attempt_success_rate"), colour: "#b45309",
        value: percent("first_attempt_success_rate") }], { yRange: [0, 100] });
    var busiest = drivers.slice().sort(function (a, b) {
      return (b.delivered + b.failed) - (a.delivered + a.failed);
    }).slice(0, 12);
    chart("perf-per-driver", busiest, [
      { label: t("console.perf.col.delivered"), colour: "#15803d", value: function (r) { return r.delivered; } },
      { label: t("console.perf.col.failed"), colour: "#b91c1c", value: function (r) { return r.failed; } }],
      { labels: busiest.map(function (r) { return driverNames[r.group] || r.group; }) });
    table($("perf-days"), days, "group", function (g) { return g; });
    table($("perf-drivers"), drivers, "driver", function (g) { return driverNames[g] || g; });
    var empty = !days.some(function (r) { return r.delivered || r.failed || r.returned; });
    $("perf-status").textContent = empty ? t("console.perf.empty") : "";
  }

  function load() {
    var from = $("perf-from").value, to = $("perf-to").value;
    var span = (Date.parse(to) - Date.parse(from)) / 86400000 + 1;
    if (!from || !to || !(span >= 1 && span <= MAX_DAYS)) {
      $("perf-status").textContent = t("console.perf.bad_range");
      return;
    }
    $("perf-status").textContent = t("console.perf.loading");
    $("perf-csv").href = API + "/v1/analytics/deliveries" + query("driver");
    Promise.all([all("/v1/analytics/deliveries" + query("day")), all("/v1/analytics/deliveries" + query("driver"))])
      .then(function (found) { draw(found[0], found[1]); },
            function () { $("perf-status").textContent = t("console.perf.failed"); });
  }

  function csv(event) {
    /* the CSV of the per-driver rows: fetched with Accept: text/csv, saved as the file the API names */
    event.preventDefault();
    window.fetch(event.currentTarget.href, { headers: { "Accept": "text/csv" }, credentials: "same-origin" })
      .then(function (res) {
        var name = /filename="([^"]+)"/.exec(res.headers.get("Content-Disposition") || "");
        return res.blob().then(function (blob) {
          var a = document.createElement("a");
          a.href = URL.createObjectURL(blob);
          a.download = name ? name[1] : "deliveries.csv";
          document.body.appendChild(a);
          a.click();
          setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 0);
        });
      });
  }

  function drivers() {
    return get("/v1/drivers?limit=100").then(function (r) {
      var select = $("perf-driver");
      ((r.data && r.data.items) || []).forEach(function (d) {
        driverNames[d.id] = d.name;
        var option = el("option", null, d.name);
        option.value = d.id;
        select.appendChild(option);
      });
    }, function () { return null; });
  }

  function start() {
    if (!$("performance")) { return; }
    var to = new Date();
    var from = new Date(to.getTime() - 29 * 86400000);
    $("perf-from").value = iso(from);
    $("perf-to").value = iso(to);
    $("perf-filters").addEventListener("submit", function (event) { event.preventDefault(); load(); });
    $("perf-csv").addEventListener("click", csv);
    drivers().then(load);
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();
