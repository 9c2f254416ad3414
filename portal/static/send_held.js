// Sending held studies with a PDF report: the report is made into an Encapsulated PDF object of
// the first chosen study (/orgs/{org}/send/report), stored into the organisation's holdings
// (STOW-RS, PS3.18 10.5), and then the form is sent as it is, the report now part of that study.
(function () {
  "use strict";
  var form = document.getElementById("send-held");
  var input = document.getElementById("held-report");
  var status = document.getElementById("held-status");
  if (!form || !input || !status || !window.fetch) { return; }
  var org = form.getAttribute("data-org");
  var csrf = form.getAttribute("data-csrf");

  function fail(why) {
    status.textContent = "The report was not attached, and nothing was sent: " + why;
  }

  form.addEventListener("submit", function (event) {
    var pdf = input.files[0];
    var chosen = form.querySelector('input[name="study"]:checked');
    if (!pdf || !chosen) { return; }  // no report: the form goes as it is
    event.preventDefault();
    status.textContent = "Attaching the report…";
    var data = new FormData();
    data.append("report", pdf, pdf.name);
    data.append("study_uid", chosen.value);
    fetch("/orgs/" + org + "/send/report", {method: "POST", body: data, credentials: "same-origin",
                                              headers: {"X-CSRF-Token": csrf}})
      .then(function (made) {
        if (!made.ok) { return made.text().then(function (why) { throw new Error(why); }); }
        return made.blob();
      })
      .then(function (report) {
        var boundary = "oix-" + Math.random().toString(16).slice(2) + Date.now().toString(16);
        var body = new Blob(["--" + boundary + "\r\nContent-Type: application/dicom\r\n\r\n", report,
                             "\r\n--" + boundary + "--\r\n"]);
        return fetch("/dicomweb/" + org + "/studies/" + encodeURIComponent(chosen.value), {
          method: "POST", body: body, credentials: "same-origin",
          headers: {"Content-Type": 'multipart/related; type="application/dicom"; boundary=' + boundary,
                    "Accept": "application/dicom+json", "X-CSRF-Token": csrf}});
      })
      .then(function (stored) {
        if (stored.status !== 200) { throw new Error("the server did not store it (" + stored.status + ")"); }
        status.textContent = "Report attached; sending…";
        form.submit();  // not a submit event: the form goes as it is
      })
      .catch(function (error) { fail(error.message); });
  });
}());
