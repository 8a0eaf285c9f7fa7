/* /docs: Weir's API reference drawn from /openapi.json (served by Weir itself; no CDN). */
(function () {
  "use strict";
  var root = document.getElementById("api");
  function esc(v) {
    return String(v == null ? "" : v).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function ref(schema) {
    if (!schema) return "";
    if (schema.$ref) { var name = schema.$ref.split("/").pop(); return '<a href="#schema-' + esc(name) + '">' + esc(name) + "</a>"; }
    if (schema.type === "array") return "array of " + ref(schema.items || {});
    if (schema.anyOf) return schema.anyOf.map(ref).join(" | ");
    return esc(schema.type || "object");
  }
  fetch("/openapi.json", { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (doc) {
    var html = "<h1>" + esc(doc.info.title) + " API " + esc(doc.info.version) + "</h1><p>" + esc(doc.info.description) + "</p>";
    Object.keys(doc.paths).forEach(function (path) {
      var ops = doc.paths[path];
      Object.keys(ops).forEach(function (method) {
        var op = ops[method];
        var params = (op.parameters || []).map(function (p) {
          return "<tr><td>" + esc(p.name) + "</td><td>" + esc(p.in) + "</td><td>" + ref(p.schema) + "</td><td>" + esc(p.description || "") + "</td></tr>";
        }).join("");
        var body = op.requestBody ? Object.keys(op.requestBody.content).map(function (t) {
          return esc(t) + ": " + ref(op.requestBody.content[t].schema);
        }).join("<br>") : "";
        var responses = Object.keys(op.responses).map(function (code) {
          var r = op.responses[code], content = r.content || {};
          return "<tr><td>" + esc(code) + "</td><td>" + esc(r.description) + "</td><td>" + Object.keys(content).map(function (t) {
            return esc(t) + " " + ref(content[t].schema);
          }).join("<br>") + "</td></tr>";
        }).join("");
        html += '<div class="card"><h2><span class="badge">' + esc(method.toUpperCase()) + "</span> " + esc(path) + "</h2><p>" + esc(op.summary || "") +
          "</p>" + (op.description ? '<p class="small muted">' + esc(op.description) + "</p>" : "") +
          (params ? "<table><tr><th>PARAMETER</th><th>IN</th><th>TYPE</th><th></th></tr>" + params + "</table>" : "") +
          (body ? "<p><b>Body</b><br>" + body + "</p>" : "") +
          "<table><tr><th>STATUS</th><th></th><th>BODY</th></tr>" + responses + "</table></div>";
      });
    });
    var schemas = (doc.components && doc.components.schemas) || {};
    html += "<h1>Schemas</h1>" + Object.keys(schemas).sort().map(function (name) {
      return '<div class="card" id="schema-' + esc(name) + '"><h2>' + esc(name) + "</h2><details><summary>JSON Schema</summary><pre>" +
        esc(JSON.stringify(schemas[name], null, 2)) + "</pre></details></div>";
    }).join("");
    root.innerHTML = html;
  }).catch(function (err) { root.innerHTML = '<p class="empty">' + esc(err.message) + "</p>"; });
})();
