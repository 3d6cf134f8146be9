// latchkey console: copy-to-clipboard and confirmation dialogs. No dependencies, no build.
"use strict";
document.addEventListener("click", function (event) {
  var copy = event.target.closest("[data-copy]");
  if (copy) {
    var field = document.getElementById(copy.getAttribute("data-copy"));
    var done = document.getElementById("copied");
    field.select();
    var say = function (text) { if (done) { done.textContent = text; } };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(field.value).then(
        function () { say("Copied."); },
        function () { say("Select the key and copy it with your keyboard."); });
    } else {
      say(document.execCommand && document.execCommand("copy") ? "Copied." : "Select the key and copy it with your keyboard.");
    }
  }
});
document.addEventListener("submit", function (event) {
  var button = event.submitter || event.target.querySelector("[data-confirm]");
  var message = button && button.getAttribute("data-confirm");
  if (message && !window.confirm(message)) {
    event.preventDefault();
  }
});
