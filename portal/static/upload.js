// Upload DICOM files (or a folder) from the browser straight into a transfer: the files are sent
// in batches as multipart/related; type="application/dicom" bodies (PS3.18 8.6.1.2, STOW-RS
// 10.5) to the outbox service root /dicomweb/{org}/outbox/{dest}[/urgent|/emergency]/studies,
// with the session's CSRF token and the note in X-OIX-Note. A PDF report is first made into an
// Encapsulated PDF object of the study by /orgs/{org}/send/report and sent in the last batch.
// Failures are shown per file: the STOW response's Warning header names each failed part
// (PS3.18 8.3.5.1). When everything is stored the transfer is completed through the JSON API.
(function () {
  "use strict";
  var BATCH_FILES = 16;
  var BATCH_BYTES = 32 * 1024 * 1024;
  var REQUEST_TIMEOUT_MS = 10 * 60 * 1000;
  var form = document.getElementById("upload");
  if (!form || !window.XMLHttpRequest) { return; }
  var org = form.getAttribute("data-org");
  var csrf = form.getAttribute("data-csrf");
  var status = document.getElementById("upload-status");
  var failures = document.getElementById("upload-failures");
  var progressArea = document.getElementById("upload-progress-area");
  var progress = document.getElementById("upload-progress");
  var button = document.getElementById("upload-button");

  function say(text) { status.textContent = text; }

  function fail(name, why) {
    var item = document.createElement("li");
    item.textContent = name + ": " + why;
    failures.appendChild(item);
  }

  function destination() {
    // The datalist offers codes labelled with names: a typed name stands for its code.
    var typed = form.elements.destination.value.trim();
    var options = document.querySelectorAll("#organisations option");
    for (var i = 0; i < options.length; i++) {
      var label = (options[i].textContent || "").trim().toLowerCase();
      if (options[i].value === typed) { return typed; }
      if (label && label === typed.toLowerCase()) { return options[i].value; }
    }
    return typed;
  }

  function latin1(text) {
    // An HTTP header value is ISO 8859-1 (RFC 9110 5.5); other characters become '?'.
    return text.replace(/[^\x20-\x7e\xa0-\xff]/g, "?");
  }

  function request(method, url, body, headers, onProgress, responseType) {
    return new Promise(function (resolve, reject) {
      var xhr = new XMLHttpRequest();
      xhr.open(method, url);
      if (responseType) { xhr.responseType = responseType; }
      xhr.timeout = REQUEST_TIMEOUT_MS;
      xhr.setRequestHeader("X-CSRF-Token", csrf);
      Object.keys(headers || {}).forEach(function (name) { xhr.setRequestHeader(name, headers[name]); });
      if (onProgress) {
        xhr.upload.onprogress = function (event) { if (event.lengthComputable) { onProgress(event.loaded); } };
      }
      xhr.onload = function () { resolve(xhr); };
      xhr.onerror = function () { reject(new Error("the connection failed")); };
      xhr.ontimeout = function () { reject(new Error("the server did not answer in time")); };
      xhr.send(body);
    });
  }

  function json(xhr) {
    try { return JSON.parse(xhr.responseText || "{}"); } catch (e) { return {}; }
  }

  function makeReport(pdf, studyFile) {
    var data = new FormData();
    data.append("report", pdf, pdf.name);
    data.append("study", studyFile, studyFile.name || "study.dcm");
    return request("POST", "/orgs/" + org + "/send/report", data, {}, null, "blob").then(function (xhr) {
      if (xhr.status !== 200) {
        return xhr.response.text().then(function (why) { throw new Error("the report: " + why); });
      }
      return xhr.response;
    });
  }

  function batches(items) {
    var out = [], current = [], bytes = 0;
    items.forEach(function (item) {
      if (current.length && (current.length >= BATCH_FILES || bytes + item.blob.size > BATCH_BYTES)) {
        out.push(current); current = []; bytes = 0;
      }
      current.push(item); bytes += item.blob.size;
    });
    if (current.length) { out.push(current); }
    return out;
  }

  function body(batch, boundary) {
    var parts = [];
    batch.forEach(function (item, index) {
      parts.push((index ? "\r\n" : "") + "--" + boundary + "\r\nContent-Type: application/dicom\r\n\r\n");
      parts.push(item.blob);
    });
    parts.push("\r\n--" + boundary + "--\r\n");
    return new Blob(parts);
  }

  function studiesOf(answer) {
    var found = [];
    var stored = (answer["00081199"] && answer["00081199"].Value) || [];
    stored.forEach(function (item) {
      var url = item["00081190"] && item["00081190"].Value && item["00081190"].Value[0];
      var match = url && /\/studies\/([0-9.]+)/.exec(url);
      if (match && found.indexOf(match[1]) < 0) { found.push(match[1]); }
    });
    return found;
  }

  function partFailures(xhr, batch) {
    // Warning: 299 oix "part N: why", ... (one per failed part)
    var header = xhr.getResponseHeader("Warning") || "";
    var pattern = /299 oix "part (\d+): ([^"]*)"/g, match, named = 0;
    while ((match = pattern.exec(header)) !== null) {
      var item = batch[parseInt(match[1], 10) - 1];
      fail(item ? item.name : "part " + match[1], match[2]);
      named++;
    }
    var answer = json(xhr);
    var failed = (answer["00081198"] && answer["00081198"].Value) || [];
    if (failed.length > named) {
      fail("this batch", (failed.length - named) + " more object(s) were refused");
    }
    return failed.length;
  }

  function complete(dest, studies) {
    // Deliver the transfers these studies opened now, rather than at the end of the idle time:
    // only those holding nothing but this upload's studies (a PACS may be streaming other
    // studies of the same patient into a transfer of its own).
    var base = "/api/orgs/" + org;
    return request("GET", base + "/outbox?state=receiving&limit=500&counterpart=" + encodeURIComponent(dest),
                   null, {"Accept": "application/json"}, null)
      .then(function (xhr) {
        var transfers = json(xhr).transfers || [];
        return Promise.all(transfers.map(function (transfer) {
          return request("GET", base + "/transfers/" + transfer.id, null, {"Accept": "application/json"}, null)
            .then(function (detail) {
              var uids = (json(detail).studies || []).map(function (s) { return s.study_uid; });
              if (!uids.length || !uids.every(function (uid) { return studies.indexOf(uid) >= 0; })) { return null; }
              return request("POST", base + "/transfers/" + transfer.id + "/complete", "{}",
                             {"Content-Type": "application/json"}, null).then(function () { return transfer.id; });
            });
        }));
      })
      .then(function (ids) { return ids.filter(Boolean); });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    failures.textContent = "";
    var dest = destination();
    var files = Array.prototype.slice.call(form.elements.files.files)
      .concat(Array.prototype.slice.call(form.elements.folder.files))
      .filter(function (file) { return file.size > 0 && file.name.toUpperCase() !== "DICOMDIR"; });
    var pdf = form.elements.report.files[0];
    if (!dest) { say("Choose the organisation to send to."); form.elements.destination.focus(); return; }
    if (!files.length) { say("Choose the DICOM files or the folder to send."); form.elements.files.focus(); return; }
    var urgency = form.elements.urgency.value;
    var url = "/dicomweb/" + org + "/outbox/" + encodeURIComponent(dest) +
      (urgency === "urgent" ? "/urgent" : urgency === "emergency" ? "/emergency" : "") + "/studies";
    var note = latin1(form.elements.note.value.trim().slice(0, 2000));
    var items = files.map(function (file) { return {name: file.webkitRelativePath || file.name, blob: file}; });
    button.disabled = true;
    progressArea.hidden = false;
    progress.value = 0;
    var refused = 0, stored = [], storedFiles = [], reportLeftOut = false;
    var total = items.reduce(function (sum, item) { return sum + item.blob.size; }, 0) || 1;
    var done = 0;

    function send(batch) {
      var boundary = "oix-" + Math.random().toString(16).slice(2) + Date.now().toString(16);
      var payload = body(batch, boundary);
      var headers = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=' + boundary,
                     "Accept": "application/dicom+json"};
      if (note) { headers["X-OIX-Note"] = note; }
      var batchBytes = batch.reduce(function (sum, item) { return sum + item.blob.size; }, 0);
      return request("POST", url, payload, headers, function (loaded) {
        progress.value = Math.min(100, Math.round(100 * (done + batchBytes * loaded / payload.size) / total));
      }).then(function (xhr) {
        done += batchBytes;
        progress.value = Math.min(100, Math.round(100 * done / total));
        progress.textContent = progress.value + "%";
        if (xhr.status === 200 || xhr.status === 202 || xhr.status === 409) {
          var failed = partFailures(xhr, batch);
          refused += failed;
          if (!failed) { storedFiles = storedFiles.concat(batch); }
          studiesOf(json(xhr)).forEach(function (uid) { if (stored.indexOf(uid) < 0) { stored.push(uid); } });
        } else {
          var why = json(xhr).error || ("the server answered " + xhr.status);
          batch.forEach(function (item) { fail(item.name, why); });
          refused += batch.length;
        }
      });
    }

    say("Sending " + items.length + " file(s)…");
    batches(items).reduce(function (previous, batch) {
      return previous.then(function () { return send(batch); });
    }, Promise.resolve()).then(function () {
      if (!pdf || !storedFiles.length) { return; }
      // The report joins the one study uploaded, made from a file of it the server stored; with
      // several studies it would belong to none of them in particular, so it is not attached.
      if (stored.length !== 1) {
        fail("report " + pdf.name, "not attached: the upload holds " + stored.length + " studies; send the " +
             "report with one study");
        reportLeftOut = true;
        return;
      }
      return makeReport(pdf, storedFiles[0].blob).then(function (report) {
        items.push({name: "report " + pdf.name, blob: report});
        total += report.size;
        return send([items[items.length - 1]]);
      });
    }).then(function () {
      if (!stored.length) { throw new Error("nothing was stored"); }
      // A transfer with files missing is not delivered: it stays open for them to be sent
      // again, and is delivered after the idle time otherwise.
      return refused || reportLeftOut ? [] : complete(dest, stored);
    }).then(function (ids) {
      var sent = items.length - refused;
      say("Sent " + sent + " of " + items.length + " file(s) to " + dest + "." +
          (refused ? " " + refused + " could not be sent: see below." : "") +
          (refused || reportLeftOut ? " The transfer stays open: send what is missing again to add it." : ""));
      ids.forEach(function (id) {
        var link = document.createElement("a");
        link.href = "/orgs/" + org + "/transfers/" + id;
        link.textContent = " Open transfer " + id;
        status.appendChild(link);
      });
    }).catch(function (error) {
      say("The upload did not finish: " + error.message + ".");
    }).then(function () { button.disabled = false; });
  });
}());
