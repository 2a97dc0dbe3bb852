// pacs-node console: local times, and the triage list refreshes itself. No framework, no build step.
"use strict";
function localTimes(root) {
  root.querySelectorAll("time[data-epoch]").forEach(function (el) {
    var t = new Date(parseFloat(el.dataset.epoch) * 1000);
    el.textContent = t.toLocaleString();
    el.title = t.toISOString();
  });
}
document.addEventListener("DOMContentLoaded", function () {
  localTimes(document);
  var list = document.getElementById("worklist");
  if (!list) { return; }
  var seconds = parseInt(list.dataset.refresh || "30", 10);
  setInterval(function () {
    // Do not pull the page from under someone typing a comment.
    if (document.activeElement && list.contains(document.activeElement)) { return; }
    fetch(window.location.href, { credentials: "same-origin" }).then(function (r) { return r.text(); }).then(function (html) {
      var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("worklist");
      if (fresh) { list.innerHTML = fresh.innerHTML; localTimes(list); }
    }).catch(function () { /* the next refresh tries again */ });
  }, seconds * 1000);
});
