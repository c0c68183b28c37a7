// The review UI's only script: conveniences on top of pages that work without it.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  // "Select all" for bulk triage; hidden until this script can make it work.
  var all = document.getElementById("select-all");
  if (all) {
    var picks = Array.prototype.slice.call(document.querySelectorAll("input.pick"));
    all.hidden = false;
    all.addEventListener("change", function () {
      picks.forEach(function (box) { box.checked = all.checked; });
    });
    picks.forEach(function (box) {
      box.addEventListener("change", function () {
        var checked = picks.filter(function (b) { return b.checked; }).length;
        all.checked = checked === picks.length;
        all.indeterminate = checked > 0 && checked < picks.length;
      });
    });
  }
  // Buttons that change what every agent runs ask first.
  document.querySelectorAll("button[data-confirm]").forEach(function (button) {
    button.addEventListener("click", function (event) {
      if (!window.confirm(button.getAttribute("data-confirm"))) {
        event.preventDefault();
      }
    });
  });
});
