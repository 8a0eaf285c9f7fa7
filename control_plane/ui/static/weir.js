/* Weir's dashboard and report: one script, no dependencies but the vendored uPlot.
 *
 * Live mode (served at /ui): the rollouts list, or one rollout's page, kept current by the server-sent
 * events of /v1/events/stream (no polling). Report mode (a file written by `weir report`): the same page
 * drawn once from window.WEIR_DATA, with no network at all.
 */
(function () {
  "use strict";

  var COLORS = { stable: "#2b59c3", canary: "#e07b00", shadow: "#8a5cc2", pass: "#1e8e3e", fail: "#b3261e" };
  var app = document.getElementById("app");
  var report = window.WEIR_DATA || null;
  var charts = {};
  var state = { rollout: null, events: [], series: null, proxies: null };

  // -- helpers -------------------------------------------------------------------------------------
  function esc(value) {
    return String(value == null ? "" : value).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function clock(at) {
    if (!at) return "-";
    var d = new Date(at * 1000);
    return d.toLocaleDateString(undefined, { month: "short", day: "numeric" }) + " " + d.toLocaleTimeString();
  }
  function duration(s) {
    if (s == null) return "-";
    s = Math.max(0, Math.round(s));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
    return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  }
  function step(r) {
    if (r.step == null || r.step < 0) return r.phase === "Shadowing" || r.mirror ? "shadow" : "-";
    return (r.step + 1) + (r.n_steps ? "/" + r.n_steps : "");
  }
  function num(x, digits) {
    if (x == null || !isFinite(x)) return "-";
    if (Math.abs(x) >= 1e4 || (Math.abs(x) < 1e-2 && x !== 0)) return x.toExponential(1);
    return (+x).toFixed(digits == null ? 2 : digits).replace(/\.?0+$/, "");
  }
  function badge(text, kind) { return '<span class="badge ' + esc(kind || text) + '">' + esc(text) + "</span>"; }
  function api(path) {
    return fetch(path, { headers: { Accept: "application/json" }, credentials: "same-origin" }).then(function (r) {
      if (r.status === 401) { window.location.href = "/ui/login"; throw new Error("not signed in"); }
      if (!r.ok) return r.json().then(function (p) { throw new Error(p.detail || r.statusText); });
      return r.json();
    });
  }
  function live(on, text) {
    var el = document.getElementById("live");
    if (!el) return;
    el.className = "live " + (on ? "on" : "off");
    el.textContent = text;
  }

  // The same reading of a verdict as control_plane/ui/evidence.py (slo_progress).
  function sloProgress(verdict) {
    var slos = (verdict && verdict.evidence && verdict.evidence.slos) || [];
    return slos.map(function (e) {
      var out = { slo: e.slo, description: e.description || "", outcome: e.outcome || "inconclusive",
        e_fail: e.e_value_fail != null ? e.e_value_fail : e.e_value, fail_threshold: e.fail_threshold != null ? e.fail_threshold : e.threshold,
        e_pass: e.e_value_pass, pass_threshold: e.pass_threshold, samples_needed: e.samples_needed,
        detail: e.blocked_by || e.waiting_for || "" };
      out.fail_fraction = fraction(out.e_fail, out.fail_threshold);
      out.pass_fraction = fraction(out.e_pass, out.pass_threshold);
      return out;
    });
  }
  function fraction(e, thr) {
    if (e == null || thr == null || thr <= 1) return 0;
    return Math.min(1, Math.max(0, Math.log(Math.max(e, 1e-300)) / Math.log(thr)));
  }
  function counts(verdict) { return (verdict && verdict.evidence && verdict.evidence.counts) || {}; }

  // -- charts --------------------------------------------------------------------------------------
  function chart(key, el, title, series, data, opts) {
    var width = Math.max(300, el.clientWidth - 4);
    var signature = series.map(function (s) { return s.label; }).join("|") + (opts && opts.log ? "|log" : "");
    var existing = charts[key];
    if (existing && existing.signature === signature && existing.el === el) {
      existing.plot.setData(data);
      return existing.plot;
    }
    if (existing) existing.plot.destroy();
    el.innerHTML = "";
    var y = { auto: true };
    if (opts && opts.log) y = { distr: 3, log: 10, auto: true };
    if (opts && opts.range) y.range = opts.range;
    var plot = new uPlot({
      title: title, width: width, height: 210,
      scales: { x: { time: true }, y: y },
      series: [{}].concat(series),
      axes: [{}, { size: 56, values: opts && opts.values }],
      legend: { live: true },
      cursor: { drag: { x: true, y: false } },
    }, data, el);
    charts[key] = { plot: plot, signature: signature, el: el };
    return plot;
  }
  function line(label, color, extra) {
    var s = { label: label, stroke: color, width: 2, spanGaps: false, points: { show: false } };
    for (var k in extra || {}) s[k] = extra[k];
    return s;
  }

  function drawCharts(s, rollout) {
    if (!s || !document.getElementById("c-weight")) return;
    var t = s.t, bin = s.bin_s || 1;
    // weight over time: a step line from the stored events
    var xs = [], ys = [];
    (s.weights || []).forEach(function (w) { xs.push(w.at); ys.push(w.weight); });
    var end = rollout && !rollout.active ? s.end : Math.max(s.end || 0, Date.now() / 1000);
    if (xs.length) { xs.push(end); ys.push(ys[ys.length - 1]); }
    chart("weight", document.getElementById("c-weight"), "canary weight (%)",
      [line("weight %", COLORS.canary, { paths: uPlot.paths.stepped({ align: 1 }), fill: "rgba(224,123,0,0.12)" })],
      [xs, ys], { range: [0, 100] });
    var versions = s.versions || [];
    if (!versions.length) {
      ["c-rate", "c-errors", "c-latency", "c-ttfb"].forEach(function (id) {
        var el = document.getElementById(id);
        if (el) el.innerHTML = '<div class="empty">' + (s.source ? "no traffic yet" :
          "no per-request source for this rollout (its policy reads Envoy stats or Prometheus)") + "</div>";
      });
    } else {
      var label = function (v) { return v.role + " " + v.version; };
      chart("rate", document.getElementById("c-rate"), "requests per second", versions.map(function (v) {
        return line(label(v), COLORS[v.role]);
      }), [t].concat(versions.map(function (v) { return v.requests.map(function (n) { return n / bin; }); })));
      chart("errors", document.getElementById("c-errors"), "error rate (%)", versions.map(function (v) {
        return line(label(v), COLORS[v.role]);
      }), [t].concat(versions.map(function (v) {
        return v.requests.map(function (n, i) { return n ? 100 * v.errors[i] / n : null; });
      })));
      var lat = [], latData = [t];
      versions.forEach(function (v) {
        [["p50", []], ["p90", [6, 3]], ["p99", [2, 3]]].forEach(function (q) {
          lat.push(line(label(v) + " " + q[0], COLORS[v.role], { dash: q[1], width: q[0] === "p50" ? 2 : 1.5 }));
          latData.push(v.latency_ms[q[0]]);
        });
      });
      chart("latency", document.getElementById("c-latency"), "latency (ms)", lat, latData);
      var withTtfb = versions.filter(function (v) { return v.ttfb_ms; });
      var ttfbEl = document.getElementById("c-ttfb");
      if (withTtfb.length) {
        ttfbEl.parentNode.style.display = "";
        var tt = [], ttData = [t];
        withTtfb.forEach(function (v) {
          [["p50", []], ["p90", [6, 3]]].forEach(function (q) {
            tt.push(line(label(v) + " " + q[0], COLORS[v.role], { dash: q[1] }));
            ttData.push(v.ttfb_ms[q[0]]);
          });
        });
        chart("ttfb", ttfbEl, "time to first byte (ms)", tt, ttData);
      } else if (ttfbEl) {
        ttfbEl.parentNode.style.display = "none";
      }
    }
    drawSloCharts(s);
  }

  function logTicks(u, values) {
    return values.map(function (v) { return v == null ? "" : (v >= 1e4 || v < 1e-2 ? v.toExponential(0) : String(+v.toPrecision(3))); });
  }

  function drawSloCharts(s) {
    var box = document.getElementById("c-slos");
    if (!box) return;
    var slos = (s.slos || []).filter(function (x) { return x.at && x.at.length; });
    if (!slos.length) { box.innerHTML = '<div class="card"><div class="empty">no analysis yet</div></div>'; return; }
    slos.forEach(function (x, i) {
      var id = "c-slo-" + i;
      var el = document.getElementById(id);
      if (!el) {
        if (i === 0) box.innerHTML = "";
        var card = document.createElement("div");
        card.className = "card";
        card.innerHTML = '<div id="' + id + '"></div>';
        box.appendChild(card);
        el = document.getElementById(id);
      }
      var floor = function (v) { return v == null ? null : Math.max(v, 1e-3); };
      var thrFail = x.at.map(function () { return x.fail_threshold; });
      var thrPass = x.at.map(function () { return x.pass_threshold; });
      chart("slo-" + i, el, x.slo + ": test statistic (e-value) vs thresholds", [
        line("toward fail", COLORS.fail, {}), line("fail threshold", COLORS.fail, { dash: [4, 4], width: 1 }),
        line("toward pass", COLORS.pass, {}), line("pass threshold", COLORS.pass, { dash: [4, 4], width: 1 }),
      ], [x.at, x.e_fail.map(floor), thrFail, x.e_pass.map(floor), thrPass], { log: true, values: logTicks });
    });
  }

  // -- the rollouts list ---------------------------------------------------------------------------
  function renderList(items, proxies) {
    var rows = items.map(function (r) {
      return "<tr><td><a href=\"/ui/rollouts/" + encodeURIComponent(r.name) + "\">" + esc(r.name) + "</a></td><td>" +
        esc(r.service) + "</td><td>" + badge(r.phase) + "</td><td>" + esc(step(r)) + "</td><td>" + esc(r.weight) +
        "%</td><td>" + esc(r.stable_version) + " &rarr; " + esc(r.canary_version) + "</td><td>" + esc(clock(r.updated_at)) +
        '</td><td class="reason small">' + esc(r.message) + "</td></tr>";
    }).join("");
    app.innerHTML = '<h1>Rollouts</h1><div class="card"><table id="rollouts"><thead><tr><th>NAME</th><th>SERVICE</th>' +
      "<th>PHASE</th><th>STEP</th><th>WEIGHT</th><th>VERSIONS</th><th>UPDATED</th><th>MESSAGE</th></tr></thead><tbody>" +
      (rows || '<tr><td colspan="8" class="empty">no rollouts yet (weir apply -f POLICY.yaml)</td></tr>') +
      '</tbody></table></div><div class="card"><h2>Proxies</h2><div id="proxies"></div></div>';
    renderProxies(proxies);
  }

  function renderProxies(proxies) {
    var el = document.getElementById("proxies");
    if (!el || !proxies) return;
    var connected = proxies.connected || [];
    if (!connected.length) { el.innerHTML = '<div class="empty">no proxies connected</div>'; return; }
    el.innerHTML = "<table><thead><tr><th>NODE</th><th>GROUP</th><th>PROTOCOL</th><th>CONVERGED</th><th>ACKED</th>" +
      "<th>NACKS</th><th>CONNECTED</th></tr></thead><tbody>" + connected.map(function (p) {
        var acked = Object.keys(p.acked || {}).map(function (type) {
          var names = Object.keys(p.acked[type]);
          return esc(type) + ": " + names.map(function (n) { return esc(n) + "@" + esc(String(p.acked[type][n]).slice(0, 10)); }).join(", ");
        }).join("<br>");
        var nacks = (p.nacks || []).length ? esc(p.nacks.length + " (" + p.nacks[p.nacks.length - 1].message + ")") : "0";
        return "<tr><td>" + esc(p.node_id) + "</td><td>" + esc(p.group) + "</td><td>" + esc(p.protocol) + '</td><td class="mono">' +
          esc(p.converged_version || "-") + '</td><td class="mono small">' + acked + "</td><td>" + nacks + "</td><td>" +
          esc(clock(p.connected_at)) + "</td></tr>";
      }).join("") + "</tbody></table>";
  }

  // -- one rollout ---------------------------------------------------------------------------------
  function skeleton(name) {
    app.innerHTML = '<div id="head"></div>' +
      '<div class="card"><h2 id="progress-title">Progress of this step</h2><div id="progress"></div></div>' +
      '<div class="grid"><div class="card"><div id="c-weight"></div></div><div class="card"><div id="c-rate"></div></div>' +
      '<div class="card"><div id="c-errors"></div></div><div class="card"><div id="c-latency"></div></div>' +
      '<div class="card" style="display:none"><div id="c-ttfb"></div></div></div>' +
      '<h2 style="margin-top:14px">SLO tests</h2><div class="grid" id="c-slos"></div>' +
      '<div class="card" style="margin-top:14px"><h2>Events</h2><div id="events"></div></div>' +
      '<div class="card"><h2>Proxies</h2><div id="proxies"></div></div>';
    document.title = "Weir: " + name;
  }

  function renderHead(r) {
    var el = document.getElementById("head");
    if (!el || !r) return;
    var routing = r.routing ? esc(r.routing.state) + ": " + esc(r.routing.detail) : "-";
    el.innerHTML = '<h1 id="rollout-name">' + esc(r.name) + " " + badge(r.phase) + "</h1>" +
      '<div class="muted">service ' + esc(r.service) + " &middot; stable " + esc(r.stable_version) + " &rarr; canary " +
      esc(r.canary_version) + " &middot; revision " + esc(r.revision) + " &middot; policy " + esc(String(r.policy_hash).slice(0, 12)) +
      '</div><div class="facts"><div><span>step</span><b id="step">' + esc(step(r)) + '</b></div><div><span>canary weight</span><b id="weight">' +
      esc(r.weight) + "%</b></div><div><span>routing</span>" + routing + '</div></div><p class="reason" id="message">' + esc(r.message) + "</p>";
  }

  function currentStep(r) {
    if (!r) return null;
    if (r.step === -1) return r.shadow;
    return (r.steps || []).filter(function (s) { return s.index === r.step; })[0] || null;
  }

  function renderProgress() {
    var el = document.getElementById("progress");
    var r = state.rollout;
    if (!el || !r) return;
    document.getElementById("progress-title").textContent = r.active ? "Progress of this step" : "The last analysis";
    var verdict = (state.series && state.series.verdict) || r.latest_verdict || r.verdict;
    var verdictAt = state.series && state.series.verdict_at;
    // A new step counts from its routing's convergence; until its first look the latest verdict is the last step's.
    var fresh = !r.active || (r.converged_at && (!verdictAt || !r.step_started_at || verdictAt >= r.step_started_at));
    if (!fresh) verdict = null;
    var c = counts(verdict), cur = currentStep(r);
    var canary = c.canary ? c.canary.requests : null, stable = c.stable ? c.stable.requests : null;
    var inStep = r.step_started_at && r.active ? (Date.now() / 1000 - r.step_started_at) : null;
    var html = '<div class="facts"><div><span>canary samples / minimum</span><b id="samples">' + esc(canary == null ? "-" : canary) +
      " / " + esc(cur ? cur.min_requests : "-") + "</b></div><div><span>stable samples</span><b>" + esc(stable == null ? "-" : stable) +
      '</b></div><div><span>time in step</span><b id="in-step">' + esc(duration(inStep)) + "</b></div><div><span>samples still needed</span><b>" +
      esc(verdict && verdict.samples_needed != null ? verdict.samples_needed : "-") + "</b></div><div><span>latest analysis</span><b>" +
      (verdict ? badge(verdict.outcome) : "-") + "</b></div></div>";
    if (verdict) html += '<p class="reason small">' + esc(verdict.reason) + "</p>";
    else if (r.active) html += '<p class="reason small muted">' + (r.converged_at ? "waiting for the first look at this step" :
      "waiting for every proxy to run this step's routing: samples count from then on") + "</p>";
    var slos = sloProgress(verdict);
    if (slos.length) {
      html += '<div class="slo small muted"><div>SLO</div><div>toward fail: e-value / threshold</div><div>toward pass: e-value / threshold</div><div>outcome</div></div>';
      html += slos.map(function (s) {
        return '<div class="slo" data-slo="' + esc(s.slo) + '"><div><b>' + esc(s.slo) + '</b><div class="small muted">' + esc(s.description) +
          '</div></div><div><div class="bar fail"><i style="width:' + (100 * s.fail_fraction).toFixed(1) + '%"></i></div><span class="small">' +
          esc(num(s.e_fail)) + " / " + esc(num(s.fail_threshold)) + '</span></div><div><div class="bar pass"><i style="width:' +
          (100 * s.pass_fraction).toFixed(1) + '%"></i></div><span class="small">' + esc(num(s.e_pass)) + " / " + esc(num(s.pass_threshold)) +
          "</span></div><div>" + badge(s.outcome) + (s.samples_needed != null ? '<div class="small">~' + esc(s.samples_needed) + " more</div>" : "") +
          (s.detail ? '<div class="small muted">' + esc(s.detail) + "</div>" : "") + "</div></div>";
      }).join("");
    }
    el.innerHTML = html;
  }

  function evidenceSummary(v) {
    var parts = sloProgress(v).map(function (s) {
      return esc(s.slo) + " " + badge(s.outcome) + " <span class=\"small\">fail " + esc(num(s.e_fail)) + "/" + esc(num(s.fail_threshold)) +
        ", pass " + esc(num(s.e_pass)) + "/" + esc(num(s.pass_threshold)) + "</span>";
    });
    var c = counts(v);
    if (c.canary) parts.push('<span class="small">canary ' + esc(c.canary.requests) + " req / " + esc(c.canary.errors) + " err; stable " +
      esc(c.stable ? c.stable.requests : 0) + " req / " + esc(c.stable ? c.stable.errors : 0) + " err</span>");
    return parts.join("<br>");
  }

  function renderEvents() {
    var el = document.getElementById("events");
    if (!el) return;
    var rows = state.events.slice().reverse().map(function (e) {
      var phase = !e.phase_from || e.phase_from === e.phase_to ? e.phase_to : e.phase_from + " \u2192 " + e.phase_to;
      var open = report && e.kind !== "converged" ? " open" : "";
      var ev = e.verdict ? "<div>" + badge(e.verdict.outcome) + " " + evidenceSummary(e.verdict) + "</div><details" + open + "><summary>full evidence</summary><pre>" +
        esc(JSON.stringify(e.verdict, null, 2)) + "</pre></details>" : "";
      return '<tr class="event" data-kind="' + esc(e.kind) + '"><td class="mono">' + esc(e.seq) + "</td><td>" + esc(clock(e.at)) + "</td><td>" + esc(e.kind) + "</td><td>" +
        esc(phase) + "</td><td>" + esc(e.step < 0 ? "-" : e.step + 1) + "</td><td>" + esc(e.weight) + '%</td><td class="reason">' +
        esc(e.reason) + ev + "</td></tr>";
    }).join("");
    el.innerHTML = "<table><thead><tr><th>SEQ</th><th>TIME</th><th>KIND</th><th>PHASE</th><th>STEP</th><th>WEIGHT</th><th>REASON AND EVIDENCE</th></tr></thead><tbody>" +
      (rows || '<tr><td colspan="7" class="empty">no events</td></tr>') + "</tbody></table>";
  }

  function renderRollout() {
    renderHead(state.rollout);
    renderProgress();
    drawCharts(state.series, state.rollout);
    renderEvents();
    renderProxies(state.proxies);
  }

  // -- live wiring ---------------------------------------------------------------------------------
  function liveList() {
    var refresh = function () {
      return Promise.all([api("/v1/rollouts"), api("/v1/proxies")]).then(function (got) { renderList(got[0].items, got[1]); });
    };
    refresh().catch(function (err) { app.innerHTML = '<p class="empty">' + esc(err.message) + "</p>"; });
    var pending = null;
    var source = new EventSource("/v1/events/stream?after=" + 0);
    source.addEventListener("open", function () { live(true, "live"); });
    source.addEventListener("error", function () { live(false, "reconnecting"); });
    source.addEventListener("event", function () {
      if (pending) return;
      pending = setTimeout(function () { pending = null; refresh().catch(function () {}); }, 150);
    });
  }

  function liveRollout(name) {
    skeleton(name);
    var enc = encodeURIComponent(name);
    Promise.all([api("/v1/rollouts/" + enc), api("/v1/rollouts/" + enc + "/events"), api("/v1/proxies")]).then(function (got) {
      state.rollout = got[0];
      state.events = got[1].items;
      state.proxies = got[2];
      renderRollout();
      var last = state.events.length ? state.events[state.events.length - 1].seq : 0;
      var source = new EventSource("/v1/events/stream?rollout=" + enc + "&after=" + last);
      var pending = null;
      source.addEventListener("open", function () { live(true, "live"); });
      source.addEventListener("error", function () { live(false, "reconnecting"); });
      source.addEventListener("event", function (msg) {
        var e = JSON.parse(msg.data);
        if (!state.events.some(function (x) { return x.seq === e.seq; })) state.events.push(e);
        renderEvents();
        if (pending) return;
        pending = setTimeout(function () {
          pending = null;
          Promise.all([api("/v1/rollouts/" + enc), api("/v1/proxies")]).then(function (got2) {
            state.rollout = got2[0];
            state.proxies = got2[1];
            renderHead(state.rollout);
            renderProgress();
            renderProxies(state.proxies);
          }).catch(function () {});
        }, 100);
      });
      source.addEventListener("series", function (msg) {
        state.series = JSON.parse(msg.data);
        renderProgress();
        drawCharts(state.series, state.rollout);
      });
      setInterval(function () {
        var el = document.getElementById("in-step"), r = state.rollout;
        if (el && r && r.step_started_at && r.active) el.textContent = duration(Date.now() / 1000 - r.step_started_at);
      }, 1000);
    }).catch(function (err) { app.innerHTML = '<p class="empty">' + esc(err.message) + "</p>"; });
  }

  function main() {
    if (report) {
      state.rollout = report.rollout;
      state.events = report.events || [];
      state.series = report.series;
      state.proxies = report.proxies;
      skeleton(report.rollout.name);
      renderRollout();
      return;
    }
    var m = window.location.pathname.match(/^\/ui\/rollouts\/([^/]+)$/);
    if (m) liveRollout(decodeURIComponent(m[1]));
    else liveList();
  }
  window.addEventListener("resize", function () {
    for (var k in charts) charts[k].plot.setSize({ width: Math.max(300, charts[k].el.clientWidth - 4), height: 210 });
  });
  main();
})();
