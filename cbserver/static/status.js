// Keeps the visitor's status page current: polls the JSON API every second.
(function () {
  "use strict";
  var root = document.getElementById("callback");
  if (!root) { return; }
  // The token goes in a header, not the address: addresses end up in access logs.
  var url = "/api/v1/callbacks/" + encodeURIComponent(root.dataset.id);
  var headers = { "Accept": "application/json", "Authorization": "Bearer " + root.dataset.token };
  var shown = null;

  function field(name) { return root.querySelector('[data-field="' + name + '"]'); }

  function render(callback) {
    var key = [callback.status, callback.position, callback.estimated_call_text, callback.due_at,
      callback.events.length].join("|");
    if (key === shown) { return; }
    shown = key;
    field("status_text").textContent = callback.status_text;
    field("position").textContent = callback.position || "";
    field("position-line").hidden = !callback.position;
    field("estimate").textContent = callback.estimated_call_text || "";
    field("estimate-line").hidden = !callback.estimated_call_text;
    field("cancel").hidden = !callback.can_cancel;
    field("reschedule").hidden = !callback.can_reschedule;
    var list = field("events");
    list.textContent = "";
    callback.events.forEach(function (event) {
      var item = document.createElement("li");
      var time = document.createElement("time");
      time.dateTime = event.at;
      time.textContent = event.at_text;
      item.appendChild(time);
      item.appendChild(document.createTextNode(": " + event.reason));
      list.appendChild(item);
    });
  }

  function poll() {
    fetch(url, { headers: headers, cache: "no-store" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (callback) { if (callback) { render(callback); } })
      .catch(function () { /* offline for a moment: the next poll tries again */ })
      .then(function () { window.setTimeout(poll, 1000); });
  }
  window.setTimeout(poll, 1000);
}());
