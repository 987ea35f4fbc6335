// The report page: the run picker, sortable tables with sticky key columns, and the cases
// (filters, sort, grouping by sample, pages). The whole state lives in location.hash:
// "#<section>&<facet>=<value>&run=<a>,<b>&sort=<metric>&order=desc&group=off", so a link
// reproduces a view and the section links keep the filters.
(function () {
  "use strict";
  var data = window.ATTNEDIT_REPORT;
  var PAGE = 48;
  var SECTIONS = ["tables", "figures", "cases", "manifests"];
  var page = 0;
  var section = "";
  var form = document.getElementById("filters");
  var sorting = document.getElementById("sorting");
  var grid = document.getElementById("case-grid");
  var count = document.getElementById("case-count");
  var notices = document.getElementById("notices");
  var picker = document.getElementById("run-picker");
  var facets = {};
  data.facets.forEach(function (f) { facets[f.key] = f; });
  data.cases.forEach(function (c, i) { c.index = i; });
  var several = data.runs.length > 1;

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // -- the state in the address -------------------------------------------------------------
  // a hand-typed "%" is not valid percent-encoding: keep the text as typed (the notice names it)
  function decode(text) {
    try { return decodeURIComponent(text); } catch (err) { return text; }
  }

  function readHash() {
    var state = { params: {}, order: [], section: "" };
    location.hash.replace(/^#/, "").split("&").forEach(function (part) {
      if (!part) return;
      var at = part.indexOf("=");
      if (at < 0) { state.section = decode(part); return; }
      var key = decode(part.slice(0, at));
      state.params[key] = part.slice(at + 1);  // decoded by the reader: "run" holds a list
      state.order.push(key);
    });
    return state;
  }

  function list(raw) { return raw.split(",").filter(Boolean).map(decode); }

  function shownList(values) {
    var head = values.slice(0, 30).map(function (v) { return "\u201c" + v + "\u201d"; }).join(", ");
    return values.length > 30 ? head + " and " + (values.length - 30) + " more" : head;
  }

  // Applies the address to the controls; returns the notices for what it names but the report lacks.
  function applyHash() {
    var state = readHash();
    var problems = [];
    section = SECTIONS.indexOf(state.section) >= 0 ? state.section : "";
    if (state.section && !section) {
      problems.push("Unknown section \u201c" + state.section + "\u201d in the address: the sections are "
                    + SECTIONS.join(", ") + ".");
    }
    var chosen = state.params.run === undefined ? data.runs.slice() : list(state.params.run);
    var unknownRuns = chosen.filter(function (r) { return data.runs.indexOf(r) < 0; });
    if (unknownRuns.length) {
      problems.push("Unknown run " + shownList(unknownRuns) + " in the address (run=): this report's runs are "
                    + shownList(data.runs) + ".");
    }
    chosen = chosen.filter(function (r) { return data.runs.indexOf(r) >= 0; });
    picker.querySelectorAll("input").forEach(function (box) {
      box.checked = chosen.length === 0 || chosen.indexOf(box.value) >= 0;
    });
    form.querySelectorAll("select").forEach(function (s) { s.value = ""; });
    state.order.forEach(function (key) {
      var value = decode(state.params[key]);
      if (key === "run") return;
      if (key === "sort" || key === "order" || key === "group") {
        var control = sorting.elements[key];
        var options = Array.prototype.map.call(control.options || [], function (o) { return o.value; });
        if (key === "group") options = ["on", "off"];
        if (options.indexOf(value) < 0) {
          problems.push("Unknown " + key + " value \u201c" + value + "\u201d in the address: the valid values are "
                        + shownList(options.filter(Boolean)) + ".");
        } else if (key === "group") {
          control.checked = value === "on";
        } else {
          control.value = value;
        }
        return;
      }
      var facet = facets[key];
      if (!facet) {
        problems.push("Unknown filter \u201c" + key + "\u201d in the address: this report filters on "
                      + shownList(data.facets.filter(function (f) { return f.key !== "run"; })
                        .map(function (f) { return f.key; })) + " (and sort, order, group, run).");
      } else if (facet.values.indexOf(value) < 0) {
        problems.push("No case has " + key + " = \u201c" + value + "\u201d (in the address): the valid values of "
                      + key + " are " + shownList(facet.values) + "."
                      + (facet.shown ? "" : " This report has that one value only, so it shows no " + key
                         + " filter."));
      } else if (facet.shown) {
        form.elements[key].value = value;
      }
    });
    notices.replaceChildren.apply(notices, problems.map(function (p) { return el("p", { class: "notice" }, p); }));
    return state;
  }

  function runsChosen() {
    var boxes = Array.prototype.slice.call(picker.querySelectorAll("input"));
    var on = boxes.filter(function (b) { return b.checked; }).map(function (b) { return b.value; });
    return boxes.length ? on : data.runs.slice();
  }

  function filters() {
    var state = {};
    form.querySelectorAll("select").forEach(function (s) { if (s.value) state[s.name] = s.value; });
    return state;
  }

  function hashText(withSection) {
    var parts = withSection && section ? [encodeURIComponent(section)] : [];
    var runs = runsChosen();
    if (several && runs.length !== data.runs.length) {
      parts.push("run=" + runs.map(encodeURIComponent).join(","));
    }
    var state = filters();
    Object.keys(state).forEach(function (k) {
      parts.push(encodeURIComponent(k) + "=" + encodeURIComponent(state[k]));
    });
    if (sorting.elements.sort.value) {
      parts.push("sort=" + encodeURIComponent(sorting.elements.sort.value));
      if (sorting.elements.order.value === "desc") parts.push("order=desc");
    }
    if (!sorting.elements.group.checked) parts.push("group=off");
    return parts.join("&");
  }

  function writeHash() {
    var hash = hashText(true);
    if (("#" + hash) !== location.hash && !(hash === "" && location.hash === "")) {
      history.replaceState(null, "", hash ? "#" + hash : location.pathname + location.search);
    }
    // the section links carry the state: following one keeps the filters
    document.querySelectorAll("nav a[data-section]").forEach(function (a) {
      var rest = hashText(false);
      a.setAttribute("href", "#" + a.getAttribute("data-section") + (rest ? "&" + rest : ""));
    });
  }

  // -- runs: the picker shows / hides each run's cases, tables and figures ---------------------
  function showRuns() {
    var runs = runsChosen();
    document.querySelectorAll("[data-run]").forEach(function (node) {
      node.hidden = runs.indexOf(node.getAttribute("data-run")) < 0;
    });
    stickAll();
  }

  // -- tables: click a header to sort; key columns stay in view -------------------------------
  function sortTable(th) {
    var table = th.closest("table");
    var column = Array.prototype.indexOf.call(th.parentNode.children, th);
    var descending = th.getAttribute("aria-sort") === "ascending";
    table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var cells = rows.map(function (r) { return r.cells[column]; });
    // a column with numbers sorts on them (cells without one, "n/a" or empty, last); else on the text
    var numeric = cells.some(function (c) { return c.hasAttribute("data-sort"); });
    function key(cell) {
      if (numeric) return cell.hasAttribute("data-sort") ? parseFloat(cell.getAttribute("data-sort")) : null;
      return cell.textContent || null;
    }
    rows.map(function (r, i) { return { row: r, key: key(r.cells[column]), i: i }; }).sort(function (a, b) {
      if (a.key === null || b.key === null || (numeric && (isNaN(a.key) || isNaN(b.key)))) {
        return (a.key === null) - (b.key === null) || a.i - b.i;  // empty cells last, either way
      }
      var d = numeric ? a.key - b.key : String(a.key).localeCompare(String(b.key), undefined, { numeric: true });
      return (descending ? -d : d) || a.i - b.i;
    }).forEach(function (item) { body.appendChild(item.row); });
  }

  function stick(table) {
    var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
    var width = table.parentNode.clientWidth;
    var left = 0;
    heads.forEach(function (th, i) {
      var stuck = th.classList.contains("key") && left + th.offsetWidth <= width / 2;
      Array.prototype.forEach.call(table.rows, function (row) {
        var cell = row.cells[i];
        if (!cell) return;
        cell.classList.toggle("stuck", stuck);
        cell.style.left = stuck ? left + "px" : "";
      });
      if (stuck) left += th.offsetWidth;
    });
  }

  function stickAll() {
    document.querySelectorAll("table.sortable").forEach(function (t) { if (t.offsetParent) stick(t); });
  }

  // -- cases ------------------------------------------------------------------------------------
  function value(c, metric) {
    for (var i = 0; i < c.metrics.length; i++) if (c.metrics[i][0] === metric) return c.metrics[i][2];
    return null;
  }

  function ordered(shown) {
    var metric = sorting.elements.sort.value;
    var sign = sorting.elements.order.value === "desc" ? -1 : 1;
    function cmp(a, b) {
      if (metric) {
        var x = value(a, metric), y = value(b, metric);
        if (x === null || y === null) { if ((x === null) !== (y === null)) return x === null ? 1 : -1; }
        else if (x !== y) return sign * (x - y);
      }
      return a.index - b.index;
    }
    if (!sorting.elements.group.checked) return shown.slice().sort(cmp);
    var groups = {}, keys = [];
    shown.forEach(function (c) {
      var key = groupKey(c);
      if (!groups[key]) { groups[key] = []; keys.push(key); }
      groups[key].push(c);
    });
    var lists = keys.map(function (k) { return groups[k].sort(cmp); });
    lists.sort(function (a, b) { return cmp(a[0], b[0]); });  // a group ranks by its first case
    return [].concat.apply([], lists);
  }

  function groupKey(c) { return c.run + "\u0000" + c.sample + "\u0000" + (c.reference || ""); }

  function image(src, caption, extra) {
    var box = el("div", { class: "shot" + (extra ? " " + extra : "") });
    if (src) box.appendChild(el("img", { src: src, alt: caption }));
    else box.appendChild(el("div", { class: "missing" }, "not saved"));
    box.appendChild(el("div", { class: "caption" }, caption));
    return box;
  }

  function referenceName(c) { return data.references[c.run] || "reference"; }

  function card(c, grouped) {
    var failed = c.facets.status === "failed";
    var node = el("article", { class: failed ? "case failed" : "case", "data-case": c.case });
    var keys = ["method", "direction", "alpha", "point", "category"];
    var title = Object.keys(c.facets).filter(function (k) { return keys.indexOf(k) >= 0 && facets[k].shown; })
      .map(function (k) { return k + " " + c.facets[k]; });
    if (!grouped) title.unshift(c.sample + (several ? " (" + c.run + ")" : ""));
    node.appendChild(el("div", { class: "title" }, title.join(" \u00b7 ") || c.case));
    if (grouped) {
      node.appendChild(image(failed ? null : c.image, failed ? "failed" : "edited"));
    } else {  // across samples: the reference on hover, over the edit
      var swap = el("div", { class: "swap", title: "hover: " + referenceName(c) });
      swap.appendChild(image(failed ? null : c.image, (failed ? "failed" : "edited") + " (hover: "
                             + referenceName(c) + ")"));
      if (c.reference) swap.appendChild(image(c.reference, referenceName(c), "reference"));
      node.appendChild(swap);
    }
    if (c.error) node.appendChild(el("p", { class: "error" }, c.error));
    if (c.marks.length) node.appendChild(el("p", { class: "mark" }, "[" + c.marks.join(", ") + "]"));
    var metrics = el("dl");
    var sorted = sorting.elements.sort.value;
    c.metrics.forEach(function (m) {
      var on = m[0] === sorted ? { class: "sorted" } : {};
      metrics.appendChild(el("dt", on, m[0]));
      metrics.appendChild(el("dd", on, m[1]));
    });
    node.appendChild(metrics);
    return node;
  }

  function groupHead(c) {
    var head = el("div", { class: "group-head" });
    head.appendChild(el("div", { class: "title" }, "sample " + c.sample + (several ? " \u00b7 " + c.run : "")));
    head.appendChild(image(c.reference, referenceName(c), "reference"));
    return head;
  }

  function renderCases() {
    var state = filters();
    var runs = runsChosen();
    var shown = ordered(data.cases.filter(function (c) {
      return runs.indexOf(c.run) >= 0 && Object.keys(state).every(function (k) { return c.facets[k] === state[k]; });
    }));
    var pages = Math.max(1, Math.ceil(shown.length / PAGE));
    page = Math.max(0, Math.min(page, pages - 1));
    var grouped = sorting.elements.group.checked;
    var nodes = [], group = null, last = null;
    shown.slice(page * PAGE, (page + 1) * PAGE).forEach(function (c) {
      if (!grouped) { nodes.push(card(c, false)); return; }
      if (groupKey(c) !== last) {
        last = groupKey(c);
        group = el("section", { class: "group", "data-sample": c.sample, "data-group-run": c.run });
        group.appendChild(groupHead(c));
        nodes.push(group);
      }
      group.appendChild(card(c, true));
    });
    grid.className = grouped ? "grouped" : "flat";
    grid.replaceChildren.apply(grid, nodes);
    count.textContent = shown.length + " of " + data.cases.length + " cases match";
    count.setAttribute("data-matching", String(shown.length));
    document.getElementById("page").textContent = "page " + (page + 1) + " of " + pages;
    document.getElementById("prev").disabled = page === 0;
    document.getElementById("next").disabled = page >= pages - 1;
  }

  function render() {
    writeHash();
    showRuns();
    renderCases();
  }

  function changed() {  // a control the user changed: the address now says what the page shows
    page = 0;
    notices.replaceChildren();
    render();
  }

  // -- controls ---------------------------------------------------------------------------------
  if (several) {
    picker.hidden = false;
    picker.appendChild(el("span", { class: "label" }, "runs:"));
    data.runs.forEach(function (r) {
      var label = el("label", {});
      var box = el("input", { type: "checkbox", value: r, name: "run" });
      box.checked = true;
      box.addEventListener("change", changed);
      label.appendChild(box);
      label.appendChild(document.createTextNode(" " + r));
      picker.appendChild(label);
    });
  }
  data.facets.forEach(function (f) {
    if (!f.shown || f.key === "run") return;
    var label = el("label", {}, f.label);
    var select = el("select", { name: f.key });
    select.appendChild(el("option", { value: "" }, "all"));
    f.values.forEach(function (v) { select.appendChild(el("option", { value: v }, v)); });
    select.addEventListener("change", changed);
    label.appendChild(select);
    form.appendChild(label);
  });
  (function () {
    var label = el("label", {}, "sort cases by");
    var select = el("select", { name: "sort" });
    select.appendChild(el("option", { value: "" }, "case order"));
    data.metrics.forEach(function (m) { select.appendChild(el("option", { value: m }, m)); });
    label.appendChild(select);
    sorting.appendChild(label);
    label = el("label", {}, "order");
    var order = el("select", { name: "order" });
    order.appendChild(el("option", { value: "asc" }, "ascending"));
    order.appendChild(el("option", { value: "desc" }, "descending"));
    label.appendChild(order);
    sorting.appendChild(label);
    label = el("label", { class: "check" });
    var box = el("input", { type: "checkbox", name: "group" });
    box.checked = true;
    label.appendChild(box);
    label.appendChild(document.createTextNode(" group by sample"));
    sorting.appendChild(label);
    [select, order, box].forEach(function (c) { c.addEventListener("change", changed); });
  })();
  document.querySelectorAll("table.sortable th").forEach(function (th) {
    th.addEventListener("click", function () { sortTable(th); });
    th.title = th.title || "click to sort";
  });
  document.querySelectorAll("details").forEach(function (d) { d.addEventListener("toggle", stickAll); });
  window.addEventListener("resize", stickAll);
  document.getElementById("prev").addEventListener("click", function () { page -= 1; renderCases(); });
  document.getElementById("next").addEventListener("click", function () { page += 1; renderCases(); });

  function load() {
    sorting.elements.sort.value = "";
    sorting.elements.order.value = "asc";
    sorting.elements.group.checked = true;
    applyHash();
    page = 0;
    render();
    if (section) document.getElementById(section).scrollIntoView();
  }
  window.addEventListener("hashchange", load);
  load();
})();
