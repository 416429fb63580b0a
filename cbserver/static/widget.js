/*
 * cbserver "Call me back" widget. A business pastes, anywhere in its page:
 *
 *   <script src="https://cb.example.com/widget.js" data-subscriber="acme" async></script>
 *
 * It shows a "Call me back" button in the corner; the button opens a small form that posts to
 * this server's JSON API (/api/v1/callbacks). Everything lives in a shadow root with its own
 * styles: the page's CSS cannot restyle the widget and the widget's CSS cannot touch the page.
 * No globals, no libraries, no modules. Every text is set with textContent.
 *
 * The visitor chooses "as soon as possible" or one of the business's free slots, listed by
 * /api/v1/subscribers/<slug>/slots (public) when the form opens; without that list the form
 * still offers "as soon as possible".
 *
 * The page's origin must be one of the subscriber's allowed origins (CORS). A page with a
 * Content-Security-Policy must allow this server in script-src and connect-src (and, when the
 * business has a CAPTCHA, its provider's script and frames: see cbserver/captcha.py).
 *
 * Against bots the form has a field people never see (it must stay empty) and sends back the
 * signed time it was opened (/widget/<slug>/form-token.json; good for one request, so a new
 * one is asked for when a request may have been taken unanswered); a CAPTCHA, when the
 * business has one, is shown in an element of the page (slotted into the form): providers'
 * scripts cannot reach into a shadow root. The widget's settings (/widget/<slug>.json) say
 * whether there is one: the form waits for them before it sends, and asks again when the
 * server wants a CAPTCHA the widget did not know of. The visitor must tick "I agree".
 */
(function () {
  "use strict";

  var TEXT = {
    launcher: "Call me back",
    title: "We will call you back",
    intro: "Leave your number and we will call you back as soon as possible.",
    phone: "Your phone number",
    phoneHint: "With the country code if you are abroad, e.g. +44 20 7946 0018.",
    name: "Your name (optional)",
    topic: "What would you like to talk about? (optional)",
    when: "When should we call you?",
    asap: "As soon as possible",
    full: "(full)",
    zoneHint: "Times are in the time zone of {name}: {zone}.",
    closedNote: "We are closed now: we will call you when we open, {time}.",
    closedRefuse: "We are closed now and open again {time}. Please choose a time.",
    notTaking: "We are not taking call-backs at the moment.",
    submit: "Send",
    sending: "Sending\u2026",
    close: "Close",
    phoneMissing: "Please enter your phone number.",
    consent: "I agree to be called at this number.",
    consentMissing: "Please tick the box to agree that we call you at this number.",
    captchaMissing: "Please complete the check that you are not a robot, then send again.",
    thanks: "Thank you \u2014 we will call you.",
    follow: "Follow your call-back",
    unreachable: "Could not reach the call-back service. Please try again.",
    failed: "Something went wrong on our side. Please try again."
  };
  var FIELDS = ["phone", "name", "topic"]; // typed in; "when" is chosen from a list
  var ERROR_FIELDS = FIELDS.concat(["when", "consent", "captcha"]);
  var TIMEOUT_MS = 20000;
  var business = ""; // the business's name, from /widget/<slug>.json
  var captchaSettings = null; // the business's CAPTCHA, from /widget/<slug>.json
  var settingsLoading = null; // while /widget/<slug>.json is asked: a promise of its arrival
  var onSettings = null; // what the mounted widget does when the settings arrive late
  // Each provider's browser API: render(element, {sitekey}), getResponse(id), reset(id).
  var CAPTCHA_APIS = { turnstile: "turnstile", hcaptcha: "hcaptcha", recaptcha: "grecaptcha" };

  var CSS = [
    // The page's rules do reach the host element; !important ones declared here win over them.
    ":host { all: initial !important; display: block !important; position: fixed !important;",
    "  right: 20px !important; bottom: 20px !important; left: auto !important;",
    "  top: auto !important; z-index: 2147483000 !important; }",
    "@media print { :host { display: none !important; } }",
    "*, *::before, *::after { box-sizing: border-box; }",
    "[hidden] { display: none !important; }",
    ".root { font: 400 16px/1.5 system-ui, -apple-system, 'Segoe UI', Roboto, Arial,",
    "  sans-serif; color: #1a1a1a; text-align: left; letter-spacing: normal; }",
    "button { font: inherit; font-weight: 600; margin: 0; border: 0; border-radius: 6px;",
    "  cursor: pointer; display: inline-block; line-height: 1.25; text-transform: none; }",
    "button:disabled { cursor: default; opacity: .65; }",
    "button:focus-visible, input:focus-visible, textarea:focus-visible, select:focus-visible,",
    "  a:focus-visible {",
    "  outline: 3px solid #f2a900; outline-offset: 2px; }",
    ".launcher { padding: 12px 20px; background: #0b5cad; color: #fff;",
    "  border-radius: 999px; box-shadow: 0 4px 14px rgba(0, 0, 0, .25); }",
    ".launcher:hover { background: #094c8f; }",
    "dialog { width: min(92vw, 380px); max-height: 92vh; overflow: auto; margin: auto;",
    "  padding: 20px; border: 0; border-radius: 10px; background: #fff; color: #1a1a1a;",
    "  box-shadow: 0 12px 40px rgba(0, 0, 0, .35); font: inherit; }",
    "dialog::backdrop { background: rgba(16, 24, 32, .45); }",
    ".floating { position: fixed; top: 0; right: 0; bottom: 0; left: 0; height: fit-content; }",
    ".head { display: flex; align-items: flex-start; justify-content: space-between;",
    "  gap: 12px; margin: 0 0 8px; }",
    "h2 { font-size: 20px; line-height: 1.25; font-weight: 700; margin: 0; color: #1a1a1a; }",
    ".x { flex: none; width: 32px; height: 32px; padding: 0; background: transparent;",
    "  color: #4a4f57; font-size: 22px; line-height: 32px; text-align: center; }",
    ".x:hover { background: #eef0f3; }",
    "p { margin: 0 0 12px; }",
    ".intro, .hint { color: #4a4f57; font-size: 14px; }",
    ".note { font-size: 14px; font-weight: 600; margin: 0 0 4px; }",
    ".field { margin: 0 0 14px; }",
    // The honeypot: off screen (not display: none, which bots look for).
    ".hp { position: absolute; left: -10000px; width: 1px; height: 1px; overflow: hidden; }",
    ".check { display: flex; gap: 8px; align-items: flex-start; font-weight: 400; }",
    ".check input { width: auto; flex: none; margin: 4px 0 0; }",
    "label { display: block; font-weight: 600; margin: 0 0 4px; }",
    ".hint { margin: 0 0 4px; }",
    "select + .hint { margin: 4px 0 0; }",
    "input, textarea, select { display: block; width: 100%; font: inherit; color: #1a1a1a;",
    "  background: #fff; padding: 8px 10px; margin: 0; border: 1px solid #8a8f98;",
    "  border-radius: 6px; }",
    "textarea { min-height: 72px; resize: vertical; }",
    "[aria-invalid=true] { border: 2px solid #a4161a; }",
    ".error { color: #a4161a; font-weight: 600; font-size: 14px; margin: 4px 0 0; }",
    ".form-error { margin: 0 0 12px; }",
    ".send { width: 100%; padding: 12px 16px; background: #0b5cad; color: #fff; }",
    ".send:hover:enabled { background: #094c8f; }",
    ".done p { font-size: 18px; font-weight: 600; }",
    ".done a { color: #0b5cad; text-decoration: underline; font-weight: 600; }",
    ".done .again { margin-top: 16px; width: 100%; padding: 10px 16px; background: #eef0f3;",
    "  color: #1a1a1a; }"
  ].join("\n");

  function findScript() {
    var current = document.currentScript;
    if (current && current.hasAttribute("data-subscriber")) { return current; }
    // Not set when run from a callback or a loader: the last widget tag not yet taken.
    var scripts = document.querySelectorAll("script[data-subscriber]");
    for (var i = scripts.length - 1; i >= 0; i -= 1) {
      var src = (scripts[i].src || "").split(/[?#]/)[0];
      if (/\/widget\.js$/.test(src) && !scripts[i].hasAttribute("data-cbserver-widget")) {
        return scripts[i];
      }
    }
    return null;
  }

  function el(tag, attributes, children) {
    var node = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (name) {
      if (name === "text") {
        node.textContent = attributes[name];
      } else {
        node.setAttribute(name, attributes[name]);
      }
    });
    (children || []).forEach(function (child) { node.appendChild(child); });
    return node;
  }

  // "{time}" in a text replaced by values.time, and so on; textContent takes the result.
  function fill(text, values) {
    return text.replace(/\{(\w+)\}/g, function (whole, name) {
      return Object.prototype.hasOwnProperty.call(values, name) ? values[name] : whole;
    });
  }

  // "14:30", the wall-clock time at iso in the business's zone; null when it cannot be told.
  function clockTime(iso, zone) {
    try {
      var parts = {};
      new Intl.DateTimeFormat("en-GB", {
        timeZone: zone, hour: "2-digit", minute: "2-digit", hourCycle: "h23"
      }).formatToParts(new Date(iso)).forEach(function (part) { parts[part.type] = part.value; });
      return parts.hour && parts.minute ? parts.hour + ":" + parts.minute : null;
    } catch (e) {
      return null;
    }
  }

  // A listed slot as the server writes its times, e.g. in its messages ("Wed 18 Nov, 12:00
  // (America/Los_Angeles)"): the day for its group, "12:00 – 12:15" for its option.
  function slotLabel(slot, zone) {
    var found = slot && typeof slot.start === "string" && typeof slot.start_text === "string" &&
      /^(.+), (\d{1,2}:\d{2}) \(/.exec(slot.start_text);
    if (!found) { return null; }
    var end = clockTime(slot.end, zone);
    return { day: found[1], time: end ? found[2] + " \u2013 " + end : found[2] };
  }

  function randomKey() {
    var cryptoApi = window.crypto;
    if (cryptoApi && typeof cryptoApi.randomUUID === "function") {
      return "widget-" + cryptoApi.randomUUID();
    }
    var bytes = new Uint8Array(16);
    cryptoApi.getRandomValues(bytes); // available on http:// pages too, unlike randomUUID
    return "widget-" + Array.prototype.map.call(bytes, function (b) {
      return (b + 256).toString(16).slice(1);
    }).join("");
  }

  function addStyles(shadow) {
    // A constructed sheet also works under a page's CSP without 'unsafe-inline' styles.
    try {
      var sheet = new CSSStyleSheet();
      sheet.replaceSync(CSS);
      shadow.adoptedStyleSheets = [sheet];
      return;
    } catch (e) { /* an older browser: an inline <style> */ }
    shadow.appendChild(el("style", { text: CSS }));
  }

  function mount(script) {
    script.setAttribute("data-cbserver-widget", "");
    var subscriber = script.getAttribute("data-subscriber");
    var endpoint = new URL("api/v1/callbacks", script.src).href;
    var tokenUrl = new URL("widget/" + encodeURIComponent(subscriber) + "/form-token.json",
      script.src).href;
    var slotsUrl = new URL("api/v1/subscribers/" + encodeURIComponent(subscriber) + "/slots",
      script.src).href;

    var host = document.createElement("cbserver-callback");
    var shadow = host.attachShadow({ mode: "open" });
    addStyles(shadow);

    var launcher = el("button", {
      type: "button", "class": "launcher", "aria-haspopup": "dialog", text: TEXT.launcher
    });
    var closeButton = el("button", {
      type: "button", "class": "x", "aria-label": TEXT.close, text: "\u00d7"
    });
    var formError = el("div", { "class": "form-error" });
    var inputs = {
      phone: el("input", {
        id: "cb-phone", name: "phone", type: "tel", autocomplete: "tel", inputmode: "tel",
        required: "", "aria-required": "true", "aria-describedby": "cb-phone-hint",
        maxlength: "40"
      }),
      name: el("input", {
        id: "cb-name", name: "name", type: "text", autocomplete: "name", maxlength: "100"
      }),
      topic: el("textarea", { id: "cb-topic", name: "topic", maxlength: "500", rows: "3" }),
      when: el("select", { id: "cb-when", name: "when" }),
      consent: el("input", {
        id: "cb-consent", name: "consent", type: "checkbox", required: "", "aria-required": "true"
      })
    };
    var honeypot = el("input", {
      id: "cb-website", name: "website", type: "text", tabindex: "-1", autocomplete: "off"
    });
    var asap = el("option", { value: "asap", text: TEXT.asap });
    inputs.when.appendChild(asap);
    var closedNote = el("p", { "class": "note", id: "cb-when-note", hidden: "" });
    var zoneHint = el("p", { "class": "hint", id: "cb-when-hint", hidden: "" });
    // What describes a field (while shown), before its error.
    var hints = {
      phone: [el("p", { "class": "hint", id: "cb-phone-hint", text: TEXT.phoneHint })],
      when: [closedNote, zoneHint]
    };
    var fieldBoxes = {};
    var fields = FIELDS.map(function (name) {
      var box = el("div", { "class": "field" }, [
        el("label", { "for": "cb-" + name, text: TEXT[name] })
      ].concat(hints[name] || [], [inputs[name]]));
      fieldBoxes[name] = box;
      return box;
    });
    fieldBoxes.when = el("div", { "class": "field" }, [
      el("label", { "for": "cb-when", text: TEXT.when }), closedNote, inputs.when, zoneHint
    ]);
    fields.push(fieldBoxes.when);
    fieldBoxes.consent = el("div", { "class": "field" }, [
      el("label", { "class": "check", "for": "cb-consent" }, [
        inputs.consent, el("span", { text: TEXT.consent })
      ])
    ]);
    fields.push(fieldBoxes.consent);
    fields.push(el("div", { "class": "hp", "aria-hidden": "true" }, [
      el("label", { "for": "cb-website", text: "Website" }), honeypot
    ]));
    // The CAPTCHA's element lives in the page (the host's light DOM), shown here by a slot.
    var captchaBox = null;
    fieldBoxes.captcha = el("div", { "class": "field", hidden: "" }, [
      el("slot", { name: "captcha" })
    ]);
    fields.push(fieldBoxes.captcha);
    var submit = el("button", { type: "submit", "class": "send", text: TEXT.submit });
    var form = el("form", { novalidate: "" }, [
      el("p", { "class": "intro", text: TEXT.intro }),
      formError
    ].concat(fields, [submit]));
    var link = el("a", { target: "_blank", rel: "noopener", text: TEXT.follow });
    var thanks = el("p", { tabindex: "-1", text: TEXT.thanks });
    var whenDone = el("p", { "class": "when-done", hidden: "" });
    var again = el("button", { type: "button", "class": "again", text: TEXT.close });
    var done = el("div", { "class": "done", hidden: "" }, [
      thanks, whenDone, el("p", {}, [link]), again
    ]);
    var dialog = el("dialog", { "aria-labelledby": "cb-title" }, [
      el("div", { "class": "head" }, [el("h2", { id: "cb-title", text: TEXT.title }), closeButton]),
      form,
      done
    ]);
    shadow.appendChild(el("div", { "class": "root", lang: "en" }, [launcher, dialog]));

    var key = null;
    var sent = false;
    var sending = false;
    var slotsAsked = 0;
    var formToken = null;
    var tokenExpires = 0;
    var tokenLoading = null;
    var captchaApi = null;
    var captchaId = null;
    var modal = false;

    // aria-describedby: the field's hints that are shown, then its error if it has one.
    function describe(name) {
      var ids = (hints[name] || []).filter(function (hint) { return !hint.hidden; })
        .map(function (hint) { return hint.id; });
      var error = fieldBoxes[name].querySelector(".error");
      if (error) { ids.push(error.id); }
      if (!inputs[name]) { return; }
      if (ids.length) {
        inputs[name].setAttribute("aria-describedby", ids.join(" "));
      } else {
        inputs[name].removeAttribute("aria-describedby");
      }
    }

    function clearErrors() {
      formError.textContent = "";
      ERROR_FIELDS.forEach(function (name) {
        var old = fieldBoxes[name].querySelector(".error");
        if (old) { old.parentNode.removeChild(old); }
        if (inputs[name]) { inputs[name].removeAttribute("aria-invalid"); }
        describe(name);
      });
    }

    // A fresh element with role=alert is announced by screen readers as it appears. A field
    // not shown (the CAPTCHA, before its settings came) has its message above the form.
    function showError(message, field) {
      if (ERROR_FIELDS.indexOf(field) < 0 || fieldBoxes[field].hidden) {
        formError.appendChild(el("p", { "class": "error", role: "alert", text: message }));
        formError.setAttribute("tabindex", "-1");
        formError.focus();
        return;
      }
      var input = inputs[field];
      fieldBoxes[field].appendChild(el("p", {
        "class": "error", id: "cb-" + field + "-error", role: "alert", text: message
      }));
      if (!input) { return; }
      input.setAttribute("aria-invalid", "true");
      describe(field);
      input.focus();
    }

    // The signed time the form was opened, good for one request; the server refuses a
    // browser's request without one, and says so.
    function loadFormToken() {
      formToken = null;
      var asked = Date.now();
      var loading = fetch(tokenUrl, { mode: "cors", credentials: "omit", cache: "no-store" })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (found) {
          if (found && typeof found.form_token === "string") {
            formToken = found.form_token;
            tokenExpires = asked + (typeof found.expires_in === "number" ?
              found.expires_in * 1000 : 3600000);
          }
        })
        .catch(function () { /* the server's answer will say what is missing */ })
        .then(function () { if (tokenLoading === loading) { tokenLoading = null; } });
      tokenLoading = loading;
    }

    function captchaAnswer() {
      try { return captchaApi ? captchaApi.getResponse(captchaId) || "" : ""; } catch (e) {
        return "";
      }
    }

    // Each answer counts once with the provider: after a refusal the visitor needs a new one.
    function resetCaptcha() {
      try { if (captchaApi) { captchaApi.reset(captchaId); } } catch (e) { /* shown anew */ }
    }

    function showCaptcha() {
      if (!captchaSettings || captchaBox) { return; }
      var name = CAPTCHA_APIS[captchaSettings.provider];
      if (!name || typeof captchaSettings.script !== "string") { return; }
      captchaBox = document.createElement("div");
      captchaBox.setAttribute("slot", "captcha");
      host.appendChild(captchaBox);
      fieldBoxes.captcha.hidden = false;
      function render() {
        var api = window[name];
        if (!api || typeof api.render !== "function") { return false; }
        captchaId = api.render(captchaBox, { sitekey: captchaSettings.site_key });
        captchaApi = api;
        return true;
      }
      var loader = document.createElement("script");
      loader.src = captchaSettings.script + "?render=explicit";
      loader.async = true;
      loader.addEventListener("load", function () {
        var api = window[name];
        if (api && typeof api.ready === "function") {
          api.ready(render);
        } else {
          render();
        }
      });
      (document.head || document.documentElement).appendChild(loader);
    }

    // The choice of times: "as soon as possible", then a group of slots per day in the
    // business's zone, full ones shown but not choosable. Without a listing, only the first.
    function showSlots(listing) {
      var select = inputs.when;
      var chosen = select.value;
      while (select.lastChild !== asap) { select.removeChild(select.lastChild); }
      asap.disabled = false;
      closedNote.hidden = true;
      zoneHint.hidden = true;
      var zone = listing && typeof listing.time_zone === "string" ? listing.time_zone : "";
      var group = null;
      var free = [];
      (listing && Array.isArray(listing.slots) ? listing.slots : []).forEach(function (slot) {
        var label = slotLabel(slot, zone);
        if (!label) { return; }
        if (!group || group.getAttribute("label") !== label.day) {
          group = select.appendChild(el("optgroup", { label: label.day }));
        }
        var full = !(slot.remaining > 0);
        var option = el("option", {
          value: slot.start, text: full ? label.time + " " + TEXT.full : label.time
        });
        option.disabled = full;
        if (!full) { free.push(option); }
        group.appendChild(option);
      });
      if (group) {
        zoneHint.textContent = fill(TEXT.zoneHint, { name: business || subscriber, zone: zone });
        zoneHint.hidden = false;
      }
      if (listing && listing.open_now === false) {
        var opening = listing.next_opening_text;
        var refuse = listing.outside_hours === "refuse";
        closedNote.textContent = typeof opening === "string" && opening ?
          fill(refuse ? TEXT.closedRefuse : TEXT.closedNote, { time: opening }) : TEXT.notTaking;
        closedNote.hidden = false;
        // "As soon as possible" would be refused now: a time has to be chosen.
        asap.disabled = refuse && free.length > 0;
      }
      // The visitor's choice stays while it can still be had.
      select.value = chosen;
      if (select.selectedIndex < 0 || select.options[select.selectedIndex].disabled) {
        select.value = asap.disabled ? free[0].value : "asap";
      }
      describe("when");
    }

    function loadSlots() {
      slotsAsked += 1;
      var asked = slotsAsked;
      function show(listing) {
        if (asked !== slotsAsked) { return; } // a later listing is on its way
        try { showSlots(listing); } catch (e) { showSlots(null); }
      }
      fetch(slotsUrl, {
        mode: "cors", credentials: "omit", cache: "no-store",
        headers: { "Accept": "application/json" }
      }).then(function (response) {
        return response.ok ? response.json() : null;
      }).then(show, function () { show(null); });
    }

    function setSending(on) {
      sending = on;
      submit.disabled = on;
      submit.textContent = on ? TEXT.sending : TEXT.submit;
      form.setAttribute("aria-busy", on ? "true" : "false");
    }

    function showDone(statusUrl, when) {
      whenDone.textContent = typeof when === "string" ? when : "";
      whenDone.hidden = !whenDone.textContent;
      var url = null;
      try { url = new URL(statusUrl, endpoint); } catch (e) { /* no link then */ }
      if (url && (url.protocol === "https:" || url.protocol === "http:")) {
        link.href = url.href;
      } else {
        link.hidden = true;
      }
      form.hidden = true;
      done.hidden = false;
      thanks.focus();
    }

    function open() {
      if (!dialog.open) {
        if (done.hidden) { key = randomKey(); sent = false; loadSlots(); loadFormToken(); }
        showCaptcha();
        // A provider's challenge may open outside the dialog, which a modal dialog makes inert.
        modal = typeof dialog.showModal === "function" && !captchaSettings;
        if (modal) {
          dialog.showModal();
        } else {
          // Not in the top layer: placed by .floating over the page instead.
          dialog.className = "floating";
          dialog.setAttribute("open", "");
        }
      }
      if (done.hidden) { inputs.phone.focus(); } else { thanks.focus(); }
    }

    function close() {
      if (typeof dialog.close === "function" && dialog.open) {
        dialog.close(); // "close" brings the focus back
      } else {
        dialog.removeAttribute("open");
        launcher.focus();
      }
    }

    // Sent once what it needs has come: the widget's settings (is there a CAPTCHA?) and a
    // form token that has not expired.
    function send(event, asked) {
      event.preventDefault();
      if (sending) { return; }
      if (!asked && !tokenLoading && (!formToken || Date.now() > tokenExpires)) {
        loadFormToken();
      }
      var waiting = settingsLoading || tokenLoading;
      if (waiting) {
        setSending(true);
        waiting.then(function () {
          setSending(false);
          showCaptcha();
          send(event, true);
        });
        return;
      }
      clearErrors();
      var body = {
        subscriber: subscriber, when: inputs.when.value || "asap", page_url: location.href,
        consent: inputs.consent.checked, website: honeypot.value
      };
      FIELDS.forEach(function (name) { body[name] = inputs[name].value.trim(); });
      if (formToken) { body.form_token = formToken; }
      if (!body.phone) {
        showError(TEXT.phoneMissing, "phone");
        return;
      }
      if (!body.consent) {
        showError(TEXT.consentMissing, "consent");
        return;
      }
      if (captchaBox) {
        body.captcha = captchaAnswer();
        if (!body.captcha) {
          showError(TEXT.captchaMissing, "captcha");
          return;
        }
      }
      sent = true;
      setSending(true);
      var controller = typeof AbortController === "function" ? new AbortController() : null;
      var timer = controller && window.setTimeout(function () { controller.abort(); }, TIMEOUT_MS);
      fetch(endpoint, {
        method: "POST",
        mode: "cors",
        credentials: "omit",
        cache: "no-store",
        headers: {
          "Content-Type": "application/json",
          "Accept": "application/json",
          "Idempotency-Key": key
        },
        body: JSON.stringify(body),
        signal: controller ? controller.signal : undefined
      }).then(function (response) {
        return response.json().catch(function () { return null; }).then(function (answer) {
          if (response.ok && answer && typeof answer.status_url === "string") {
            showDone(answer.status_url, answer.when_text);
            return;
          }
          resetCaptcha();
          // The request may have been taken: its form token is spent.
          if (response.status >= 500) { loadFormToken(); }
          if (answer && answer.error && typeof answer.error.message === "string") {
            showError(answer.error.message, answer.error.field);
            // Taken meanwhile, or no longer possible: the message says so, the list shows it.
            if (answer.error.field === "when") { loadSlots(); }
            // A CAPTCHA the widget did not know of (its settings did not come): ask again.
            if (answer.error.field === "captcha" && !captchaBox) { loadSettings(); }
          } else {
            showError(TEXT.failed, null);
          }
        });
      }, function () {
        resetCaptcha();
        loadFormToken();
        showError(TEXT.unreachable, null);
      }).catch(function () {
        showError(TEXT.failed, null);
      }).then(function () {
        if (timer) { window.clearTimeout(timer); }
        setSending(false);
      });
    }

    launcher.addEventListener("click", open);
    closeButton.addEventListener("click", close);
    again.addEventListener("click", close);
    form.addEventListener("submit", send);
    // Typed something new after a request went out: that is another request, with its own key.
    form.addEventListener("input", function () {
      if (sent) { key = randomKey(); sent = false; }
    });
    dialog.addEventListener("close", function () { launcher.focus(); });
    onSettings = function () { if (dialog.open) { showCaptcha(); } };
    // A modal <dialog> closes on Escape by itself; without showModal, by this.
    dialog.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && !modal) { close(); }
    });
    // A click on the dimmed page around the dialog closes it.
    dialog.addEventListener("click", function (event) {
      if (event.target !== dialog) { return; }
      var box = dialog.getBoundingClientRect();
      var inside = event.clientX >= box.left && event.clientX <= box.right &&
        event.clientY >= box.top && event.clientY <= box.bottom;
      if (!inside) { close(); }
    });

    (document.body || document.documentElement).appendChild(host);
  }

  var script = findScript();
  if (!script) { return; }
  if (!script.getAttribute("data-subscriber")) {
    if (window.console) { window.console.error("cbserver widget: data-subscriber is missing"); }
    return;
  }
  var mounted = false;
  var settingsUrl = new URL("widget/" +
    encodeURIComponent(script.getAttribute("data-subscriber")) + ".json", script.src).href;

  // The business's name, language and CAPTCHA. Labels that come after the widget was shown
  // are not used (English it stays); a CAPTCHA is shown whenever it comes.
  function loadSettings() {
    var loading = fetch(settingsUrl, { credentials: "omit" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (found) {
        if (found && typeof found.name === "string") { business = found.name; }
        if (found && found.captcha && typeof found.captcha.site_key === "string") {
          captchaSettings = found.captcha;
        }
        if (found && found.text && !mounted) {
          Object.keys(TEXT).forEach(function (key) {
            if (typeof found.text[key] === "string") { TEXT[key] = found.text[key]; }
          });
        }
      })
      .catch(function () { /* asked again when the server wants what they would say */ })
      .then(function () {
        if (settingsLoading === loading) { settingsLoading = null; }
        if (onSettings) { onSettings(); }
      });
    settingsLoading = loading;
    return loading;
  }

  // The widget is shown when its settings came, or after 3 s without them (in English).
  function withTexts(then) {
    var done = false;
    function finish() { if (!done) { done = true; mounted = true; then(); } }
    window.setTimeout(finish, 3000);
    loadSettings().then(finish);
  }

  function start() { withTexts(function () { mount(script); }); }
  if (document.body) {
    start();
  } else {
    document.addEventListener("DOMContentLoaded", start);
  }
}());
