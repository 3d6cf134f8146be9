// latchkey console: copy-to-clipboard, confirmation dialogs, and a new key's secret
// forgotten when its page is left. No dependencies, no build.
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
    return;
  }
  // A key's full text in a field of a form sent in its address (the key list's search and
  // user) goes as its display prefix: the secret stays out of the URL (a proxy's log, the
  // browser's history). The daemon does the same for a browser without this script.
  if ((event.target.getAttribute("method") || "get").toLowerCase() === "get") {
    event.target.querySelectorAll("input[type=search], input[type=text]").forEach(function (field) {
      field.value = field.value
        .replace(/^\s*([a-z0-9]{2,8}_(?:live|test)_[^\s_]{12})_\S{30,60}\s*$/, "$1")
        .replace(/([a-z0-9]{2,8}_(?:live|test)_[0-9A-Za-z]{12})_[0-9A-Za-z]{38}/g, "$1");
    });
  }
});
// A page showing a new key's secret drops it when left: the browser's back/forward cache
// keeps pages (no-store ones included) and Back would otherwise show the secret again.
window.addEventListener("pagehide", function () {
  var secret = document.getElementById("secret");
  var card = secret && secret.closest(".card");
  if (card) {
    secret.value = "";
    var gone = document.createElement("p");
    gone.className = "alert";
    gone.id = "secret-gone";
    gone.textContent = "The key was shown once: it is no longer on this page.";
    card.replaceWith(gone);
  }
});
