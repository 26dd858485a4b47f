// jitgate web page: reloads a list that asks for it (body[data-refresh], in seconds) while
// nobody is using the page, counts "time left" down between reloads, and ticks every box at
// once. Served from the binary: the Content-Security-Policy allows no inline script.
//
// The reload is a poll. When the admin plane has an event stream, this is the one place to
// change: listen to it and reload when a ticket the page shows changes.
(function () {
  "use strict";
  var loaded = Date.now();

  // Someone is choosing or typing: a reload would throw that away.
  function busy() {
    var active = document.activeElement;
    if (active && (active.tagName === "INPUT" || active.tagName === "TEXTAREA")) {
      return true;
    }
    var fields = document.querySelectorAll("input, textarea");
    for (var i = 0; i < fields.length; i++) {
      var f = fields[i];
      if (f.type === "checkbox" ? f.checked : (f.type !== "hidden" && f.value !== "")) {
        return true;
      }
    }
    return false;
  }

  function human(ms) {
    if (ms <= 0) { return "expired"; }
    var s = Math.ceil(ms / 1000);
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    if (s < 60) { return s + "s"; }
    if (s < 3600) { return Math.floor(s / 60) + "m " + pad(s % 60) + "s"; }
    return Math.floor(s / 3600) + "h " + pad(Math.floor((s % 3600) / 60)) + "m";
  }

  function tick() {
    var spent = Date.now() - loaded;
    var spans = document.querySelectorAll("[data-left-ms]");
    for (var i = 0; i < spans.length; i++) {
      spans[i].textContent = human(Number(spans[i].getAttribute("data-left-ms")) - spent);
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    setInterval(tick, 1000);
    var every = Number(document.body.getAttribute("data-refresh") || 0);
    if (every > 0) {
      setInterval(function () {
        if (!document.hidden && !busy()) { window.location.reload(); }
      }, every * 1000);
    }
    var all = document.getElementById("select-all");
    if (all) {
      all.addEventListener("change", function () {
        var boxes = document.querySelectorAll("input[name=id]");
        for (var i = 0; i < boxes.length; i++) { boxes[i].checked = all.checked; }
      });
    }
  });
})();
