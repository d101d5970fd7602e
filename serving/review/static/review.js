// Keyboard shortcuts for the review pages. No inline scripts: the CSP allows this file only.
(function () {
  "use strict";

  function click(id) {
    var el = document.getElementById(id);
    if (el) { el.click(); return true; }
    return false;
  }

  function typing(target) {
    var tag = (target && target.tagName) || "";
    return tag === "TEXTAREA" || tag === "SELECT" ||
      (tag === "INPUT" && target.type !== "checkbox" && target.type !== "radio");
  }

  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (typing(target)) {
      if (event.key === "Escape") { target.blur(); }
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && click("submit")) {
        event.preventDefault();
      }
      return;
    }
    if (event.altKey || event.metaKey || (event.ctrlKey && event.key !== "Enter")) { return; }
    var key = event.key;
    var handled = true;
    if (key >= "1" && key <= "9") {
      var box = document.querySelector('input[type=checkbox][data-index="' + key + '"]');
      if (box) { box.checked = !box.checked; } else { handled = false; }
    } else if (key === "a") {
      handled = click("accept");
    } else if (key === "d" || (key === "Enter" && event.ctrlKey)) {
      handled = click("submit");
    } else if (key === "i") {
      handled = click("needs-info");
    } else if (key === "s") {
      handled = click("skip");
    } else if (key === "x") {
      handled = click("clear-labels");
    } else if (key === "c") {
      handled = click("claim") || click("claim-next");
    } else if (key === "n") {
      var note = document.getElementById("note");
      if (note) { note.focus(); } else { handled = false; }
    } else if (key === "h") {
      handled = click("history-link");
    } else if (key === "q") {
      window.location.href = "/review/queue";
    } else if (key === "?") {
      var help = document.getElementById("help");
      if (help) { help.hidden = !help.hidden; }
    } else {
      handled = false;
    }
    if (handled) { event.preventDefault(); }
  });

  document.addEventListener("DOMContentLoaded", function () {
    var clear = document.getElementById("clear-labels");
    if (clear) {
      clear.addEventListener("click", function () {
        document.querySelectorAll('#decide input[type=checkbox][name=labels]').forEach(
          function (box) { box.checked = false; });
      });
    }
    // A form submits once: a second press while the first is in flight does nothing.
    document.querySelectorAll("form").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (form.dataset.sent === "1") { event.preventDefault(); return; }
        if (form.method.toLowerCase() === "post") { form.dataset.sent = "1"; }
      });
    });
  });
})();
