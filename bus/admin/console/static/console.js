// lgsp-bus console: the little script it has (no inline script anywhere; CSP script-src 'self').
// Reads an uploaded routing.yaml into the text area, so the form posts plain text.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var upload = document.getElementById("upload");
  var text = document.getElementById("text");
  if (upload && text) {
    upload.addEventListener("change", function () {
      var file = upload.files && upload.files[0];
      if (!file) { return; }
      var reader = new FileReader();
      reader.onload = function () { text.value = String(reader.result); };
      reader.readAsText(file, "utf-8");
    });
  }
  var bad = document.querySelector(".bad-line");
  if (bad) { bad.scrollIntoView({ block: "center" }); }
});
