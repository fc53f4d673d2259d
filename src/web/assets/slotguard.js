// slotguard dashboard: the only script of our own. Pages work without it; with it,
// htmx requests carry the CSRF token, and one EventSource per page turns each
// incident change the server announces into an `sg:incident` event on <body>, which
// the page's live regions (hx-trigger="sg:incident from:body") answer by reloading.
(function () {
  "use strict";
  var token = document.querySelector('meta[name="csrf-token"]');
  document.addEventListener("htmx:configRequest", function (e) {
    if (token) { e.detail.headers["X-CSRF-Token"] = token.content; }
  });
  var url = document.body.getAttribute("data-live");
  var status = document.getElementById("live-status");
  if (!url || !window.EventSource) { return; }
  var say = function (text) { if (status) { status.textContent = text; } };
  var source = new EventSource(url);
  source.addEventListener("open", function () { say("● Live: new incidents appear without a reload."); });
  source.addEventListener("error", function () { say("○ Live updates interrupted; reconnecting…"); });
  source.addEventListener("incident", function () {
    document.body.dispatchEvent(new CustomEvent("sg:incident"));
  });
})();
