// The case grid: filters (one <select> per facet, state kept in location.hash), pages of cases.
(function () {
  "use strict";
  var data = window.ATTNEDIT_REPORT;
  var PAGE = 48;
  var page = 0;
  var form = document.getElementById("filters");
  var grid = document.getElementById("case-grid");
  var count = document.getElementById("case-count");

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function readHash() {
    var state = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (part) {
      var at = part.indexOf("=");
      if (at > 0) state[decodeURIComponent(part.slice(0, at))] = decodeURIComponent(part.slice(at + 1));
    });
    return state;
  }

  function selected() {
    var state = {};
    form.querySelectorAll("select").forEach(function (s) { if (s.value) state[s.name] = s.value; });
    return state;
  }

  function matches(c, state) {
    return Object.keys(state).every(function (k) { return c.facets[k] === state[k]; });
  }

  function image(src, caption) {
    var box = el("div");
    if (src) box.appendChild(el("img", { src: src, alt: caption }));
    else box.appendChild(el("div", { class: "missing" }, "not saved"));
    box.appendChild(el("div", { class: "caption" }, caption));
    return box;
  }

  function card(c) {
    var failed = c.facets.status === "failed";
    var node = el("article", { class: failed ? "case failed" : "case", "data-case": c.case });
    node.appendChild(el("div", { class: "title" }, c.sample + " · " + Object.keys(c.facets)
      .filter(function (k) { return ["method", "direction", "alpha", "point", "category"].indexOf(k) >= 0; })
      .map(function (k) { return k + " " + c.facets[k]; }).join(" · ")));
    var pair = el("div", { class: "pair" });
    pair.appendChild(image(c.reference, (data.references[c.run] || "reference")));
    pair.appendChild(image(failed ? null : c.image, failed ? "failed" : "edited"));
    node.appendChild(pair);
    if (c.error) node.appendChild(el("p", { class: "error" }, c.error));
    if (c.marks.length) node.appendChild(el("p", { class: "mark" }, "[" + c.marks.join(", ") + "]"));
    var list = el("dl");
    c.metrics.forEach(function (m) { list.appendChild(el("dt", {}, m[0])); list.appendChild(el("dd", {}, m[1])); });
    node.appendChild(list);
    return node;
  }

  function render() {
    var state = selected();
    var hash = Object.keys(state).map(function (k) {
      return encodeURIComponent(k) + "=" + encodeURIComponent(state[k]);
    }).join("&");
    if (("#" + hash) !== location.hash && !(hash === "" && location.hash === "")) {
      history.replaceState(null, "", hash ? "#" + hash : location.pathname + location.search);
    }
    var shown = data.cases.filter(function (c) { return matches(c, state); });
    var pages = Math.max(1, Math.ceil(shown.length / PAGE));
    page = Math.min(page, pages - 1);
    grid.replaceChildren.apply(grid, shown.slice(page * PAGE, (page + 1) * PAGE).map(card));
    count.textContent = shown.length + " of " + data.cases.length + " cases match";
    count.setAttribute("data-matching", String(shown.length));
    document.getElementById("page").textContent = "page " + (page + 1) + " of " + pages;
    document.getElementById("prev").disabled = page === 0;
    document.getElementById("next").disabled = page >= pages - 1;
  }

  var initial = readHash();
  data.facets.forEach(function (f) {
    var label = el("label", {}, f.label);
    var select = el("select", { name: f.key });
    select.appendChild(el("option", { value: "" }, "all"));
    f.values.forEach(function (v) { select.appendChild(el("option", { value: v }, v)); });
    if (f.values.indexOf(initial[f.key]) >= 0) select.value = initial[f.key];
    select.addEventListener("change", function () { page = 0; render(); });
    label.appendChild(select);
    form.appendChild(label);
  });
  document.getElementById("prev").addEventListener("click", function () { page -= 1; render(); });
  document.getElementById("next").addEventListener("click", function () { page += 1; render(); });
  window.addEventListener("hashchange", function () {
    var state = readHash();
    form.querySelectorAll("select").forEach(function (s) { s.value = state[s.name] || ""; });
    page = 0;
    render();
  });
  render();
})();
