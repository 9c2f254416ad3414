// The inbox refreshes itself: every few seconds it fetches the table's rows from
// /orgs/{org}/inbox/rows (the same filters and page) and, when they changed, swaps them in and
// says so through the aria-live status. No full reload; nothing runs while the tab is hidden.
(function () {
  "use strict";
  var INTERVAL_MS = 5000;
  var table = document.getElementById("inbox");
  var status = document.getElementById("inbox-status");
  if (!table || !status || !window.fetch) { return; }
  var url = table.getAttribute("data-rows-url");
  var etag = null;  // the rows last seen: the server answers 304 while they are unchanged

  function ids(body) {
    var value = body.getAttribute("data-newest") || "";
    return value ? value.split(" ") : [];
  }

  function refresh() {
    if (document.hidden) { schedule(); return; }
    var headers = {"Accept": "text/html"};
    if (etag) { headers["If-None-Match"] = etag; }
    fetch(url, {credentials: "same-origin", headers: headers, redirect: "manual", cache: "no-store"})
      .then(function (response) {
        if (response.status === 304) { return null; }
        if (!response.ok) { throw new Error("status " + response.status); }
        etag = response.headers.get("ETag");
        return response.text();
      })
      .then(function (html) {
        if (html === null) { return; }
        var template = document.createElement("template");
        template.innerHTML = html.trim();
        var fresh = template.content.querySelector("tbody");
        var current = document.getElementById("inbox-rows");
        if (!fresh || !current) { return; }
        var before = ids(current);
        var after = ids(fresh);
        if (before.join(" ") === after.join(" ") && fresh.innerHTML === current.innerHTML) { return; }
        var added = after.filter(function (id) { return before.indexOf(id) < 0; });
        current.replaceWith(fresh);
        var emergencies = fresh.querySelectorAll("tr.emergency").length;
        if (added.length) {
          var firstNew = fresh.querySelector('tr[data-transfer="' + added[0] + '"]');
          var emergency = firstNew && firstNew.classList.contains("emergency");
          status.textContent = added.length + " new transfer" + (added.length === 1 ? "" : "s") +
            " received" + (emergency ? ", a clinical emergency" : "") + ".";
        } else {
          status.textContent = "Inbox updated" + (emergencies ? "; " + emergencies + " clinical emergenc" +
            (emergencies === 1 ? "y" : "ies") + " shown first." : ".");
        }
      })
      .catch(function () { /* the next round tries again */ })
      .then(schedule);
  }

  function schedule() { window.setTimeout(refresh, INTERVAL_MS); }
  schedule();
}());
