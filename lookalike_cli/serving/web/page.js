// lookalike's page: shrink a photo in the browser, post it to /query, show each face beside its matches.
"use strict";

(() => {
  const MAX_SIDE = 1280;  // pixels: a photo is shrunk to this on its longer side before it is sent
  const JPEG_QUALITY = 0.9;
  const WAIT_MS = 120000;  // a request not answered by then is given up
  const CROP_MARGIN = 0.6;  // around a face, in face sizes (as in the answer picture)

  // The page's words in its language (the server's catalogs: language.py) and how an answer ended (its table
  // of outcomes, answers/outcomes.py); replaced by another language's from /messages/<language>.json.
  let PAGE = JSON.parse(document.getElementById("page-data").textContent);
  const LANGUAGE_KEY = "lookalike-language";  // the language chosen with the switch, remembered in this browser

  // A message in the page's language, its {fields} filled.
  function text(key, values = {}) {
    return PAGE.messages[key].replace(/\{(\w+)\}/g, (field, name) => (name in values ? String(values[name]) : field));
  }

  function message(key, seconds = 0) {
    return text(key === "busy" && seconds === 1 ? "busyOneSecond" : key, { seconds: number(seconds) });
  }

  const number = (value) => new Intl.NumberFormat(PAGE.language).format(value);

  const $ = (id) => document.getElementById(id);
  let people = 0;  // the gallery's size, from /stats
  let maxBytes = 0;  // the server's body limit, when /stats gives it
  let current = 0;  // the photo being answered: answers to an earlier one are dropped

  function say(text, { error = false, progress = null } = {}) {
    $("message").textContent = text;
    $("status").classList.toggle("error", error);
    const bar = $("progress");
    bar.hidden = progress === null;
    if (progress === "waiting") {
      bar.removeAttribute("value");  // indeterminate
    } else if (progress !== null) {
      bar.value = progress;
    }
  }

  const percent = (similarity) =>
    new Intl.NumberFormat(PAGE.language, { style: "percent", maximumFractionDigits: 0 }).format(similarity);

  // Every element's words that the page's HTML names by key (data-text, data-label) under root.
  function applyTexts(root) {
    for (const element of root.querySelectorAll("[data-text]")) element.textContent = text(element.dataset.text);
    for (const element of root.querySelectorAll("[data-label]")) {
      element.setAttribute("aria-label", text(element.dataset.label));
    }
  }

  // The page in its language: its words, its intro (with the gallery's size when known), the switch.
  function applyLanguage() {
    document.documentElement.lang = PAGE.language;
    applyTexts(document);
    document.title = text("title");
    if (people) $("intro").textContent = text("introPeople", { people: number(people) });
    const links = Object.entries(PAGE.languages).map(([code, name]) => {
      const link = document.createElement("a");
      link.href = `?language=${encodeURIComponent(code)}`;
      link.lang = link.hreflang = code;
      link.textContent = name;
      if (code === PAGE.language) link.setAttribute("aria-current", "true");
      return link;
    });
    $("languages").replaceChildren(...links);
  }

  function remember(code) {
    try { localStorage.setItem(LANGUAGE_KEY, code); } catch (error) { /* storage off: not remembered */ }
  }

  function remembered() {
    try { return localStorage.getItem(LANGUAGE_KEY); } catch (error) { return null; }
  }

  // The language the browser prefers, when the server chose by default (no ?language=, no Accept-Language it
  // knows): the one chosen with the switch before, else the first of navigator.languages the server speaks.
  async function preferredLanguage() {
    if (PAGE.chosenBy === "query") remember(PAGE.language);
    if (PAGE.chosenBy === "query" || PAGE.chosenBy === "header" && !remembered()) return;
    const wanted = [remembered(), ...(navigator.languages || [])].filter(Boolean)
      .map((code) => Object.keys(PAGE.languages).find(
        (known) => known.toLowerCase() === code.toLowerCase() || known === code.split("-")[0].toLowerCase()))
      .find(Boolean);
    if (!wanted || wanted === PAGE.language) return;
    try {
      const response = await fetch(`/messages/${encodeURIComponent(wanted)}.json`);
      if (response.ok) PAGE = await response.json();
    } catch (error) {
      // the page stays in the language it came in
    }
  }

  function loadImage(file) {
    return new Promise((resolve, reject) => {
      const url = URL.createObjectURL(file);
      const image = new Image();
      image.onload = () => { URL.revokeObjectURL(url); resolve(image); };
      image.onerror = () => { URL.revokeObjectURL(url); reject(new Error("not an image the browser reads")); };
      image.src = url;
    });
  }

  // The photo drawn at most MAX_SIDE pixels on its longer side (turned as its EXIF says, on white), and as JPEG.
  async function shrink(file) {
    const image = await loadImage(file);
    const scale = Math.min(1, MAX_SIDE / Math.max(image.naturalWidth, image.naturalHeight));
    const canvas = document.createElement("canvas");
    canvas.width = Math.max(1, Math.round(image.naturalWidth * scale));
    canvas.height = Math.max(1, Math.round(image.naturalHeight * scale));
    const context = canvas.getContext("2d");
    context.fillStyle = "#fff";
    context.fillRect(0, 0, canvas.width, canvas.height);
    context.imageSmoothingQuality = "high";
    context.drawImage(image, 0, 0, canvas.width, canvas.height);
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", JPEG_QUALITY));
    if (!blob) throw new Error("the photo could not be encoded");
    return { blob, canvas };
  }

  // POST a body; resolves with {status, retryAfter, body} (status 0: no answer at all).
  function post(url, body, responseType, { onProgress = null, onSent = null } = {}) {
    return new Promise((resolve) => {
      const request = new XMLHttpRequest();
      request.open("POST", url);
      request.timeout = WAIT_MS;
      request.responseType = responseType;
      request.setRequestHeader("Content-Type", body.type || "application/octet-stream");
      if (onProgress) request.upload.onprogress = (event) => event.lengthComputable && onProgress(event.loaded / event.total);
      if (onSent) request.upload.onload = onSent;
      request.onload = () => resolve({ status: request.status, retryAfter: request.getResponseHeader("Retry-After"),
                                       body: request.response });
      request.onerror = () => resolve({ status: 0 });
      request.ontimeout = () => resolve({ status: 504 });
      request.send(body);
    });
  }

  function parsed(text) {
    try { return JSON.parse(text); } catch (error) { return null; }
  }

  // The plain sentence for an answer that is not a result: by the photo's rejection reason, the answer's status,
  // or (an answer whose body says neither) its HTTP code.
  function problem(response, answer) {
    if (response.status === 0) return message("offline");
    const reason = answer && answer.reason;
    const status = (answer && answer.status) || PAGE.http[String(response.status)];
    const key = (reason && PAGE.rejections[reason]) || PAGE.statuses[status] || "failed";
    return message(key, Math.max(1, parseInt(response.retryAfter, 10) || 60));
  }

  function clearResults() {
    $("faces").replaceChildren();
    $("results").hidden = true;
    $("answer").hidden = true;
    $("answer-save").hidden = true;
  }

  const clamp = (value, lowest, highest) => Math.min(Math.max(value, lowest), highest);

  // The face with a margin, as a square kept inside the photo (smaller when the photo is).
  function drawCrop(canvas, picture, box) {
    const [left, top, right, bottom] = box;
    const side = Math.min(Math.max(right - left, bottom - top) * (1 + 2 * CROP_MARGIN), picture.width, picture.height);
    const x = clamp((left + right - side) / 2, 0, picture.width - side);
    const y = clamp((top + bottom - side) / 2, 0, picture.height - side);
    const context = canvas.getContext("2d");
    context.imageSmoothingQuality = "high";
    context.drawImage(picture, x, y, side, side, 0, 0, canvas.width, canvas.height);
  }

  function fillPerson(element, match) {
    const image = element.querySelector("img");
    image.alt = text("photoOf", { name: match.name });
    image.src = match.photo_url;
    element.querySelector(".name").textContent = match.name;
    element.querySelector(".percent").textContent = percent(match.similarity);
  }

  function show(faces, picture) {
    const several = faces.length > 1;
    faces.forEach((face, index) => {
      const item = $("face-template").content.firstElementChild.cloneNode(true);
      applyTexts(item);
      const best = face.matches[0];
      const whose = several ? text("faceOf", { number: number(index + 1), count: number(faces.length) })
        : text("yourFace");
      item.querySelector(".face-title").textContent = whose;
      item.querySelector(".face-title").classList.toggle("visually-hidden", !several);
      const crop = item.querySelector(".crop");
      if (picture) {
        crop.setAttribute("aria-label", whose);
        item.querySelector(".yours figcaption").textContent =
          several ? text("faceNumber", { number: number(index + 1) }) : text("you");
        drawCrop(crop, picture, face.box);
      } else {
        item.querySelector(".yours").hidden = true;  // the browser could not read the photo; the server could
      }
      fillPerson(item.querySelector(".best"), best);
      item.querySelector(".summary").textContent =
        text(several ? "faceLooksLike" : "looksLike", { name: best.name, percent: percent(best.similarity) });
      const others = face.matches.slice(1);
      if (others.length) {
        const list = item.querySelector(".others");
        for (const match of others) {
          const row = $("other-template").content.firstElementChild.cloneNode(true);
          fillPerson(row, match);
          list.append(row);
        }
        item.querySelector(".more").hidden = false;
      }
      $("faces").append(item);
    });
    $("results-title").textContent = text(several ? "yourLookalikes" : "yourLookalike");
    $("results").hidden = false;
    $("results-title").focus();
  }

  // The answer picture of ?format=png, sent with the answer as a data URL (null: no face was drawn).
  function showPicture(dataUrl) {
    if (!dataUrl) return;
    const image = $("answer-picture");
    image.alt = text("answerAlt");
    image.src = dataUrl;
    $("answer-save").href = dataUrl;
    $("answer-save").hidden = false;
    $("answer").hidden = false;
  }

  async function answer(file) {
    const photo = ++current;
    clearResults();
    say(text("gettingReady"), { progress: "waiting" });
    let upload = file;
    let picture = null;
    try {
      ({ blob: upload, canvas: picture } = await shrink(file));
    } catch (error) {  // the browser cannot read it: sent as it is, the server says what it is
      if (maxBytes && file.size > maxBytes) {
        say(message("tooLarge"), { error: true });
        return;
      }
    }
    if (photo !== current) return;
    say(text("sending"), { progress: 0 });
    const response = await post(`/query?picture=1&language=${encodeURIComponent(PAGE.language)}`, upload, "text", {
      onProgress: (fraction) => photo === current && say(text("sending"), { progress: Math.round(100 * fraction) }),
      onSent: () => photo === current && say(text("comparing"), { progress: "waiting" }),
    });
    if (photo !== current) return;
    const result = parsed(response.body);
    if (response.status !== 200 || !result || !Array.isArray(result.photos)) {
      say(problem(response, result), { error: true });
      return;
    }
    const faces = result.photos[0].faces;
    if (!faces.length) {
      say(result.photos[0].fallback_busy ? message("busy", 5) : message("noFace"), { error: true });
      return;
    }
    const lookedTwice = faces.some((face) => PAGE.fallbackLooks.includes(face.detector));
    say((faces.length === 1 ? text("hereIsOne") : text("hereAreSeveral", { count: number(faces.length) })) +
        (lookedTwice ? ` ${message("hardToSee")}` : ""));
    show(faces, picture);
    showPicture(result.picture);
  }

  async function loadStats() {
    try {
      const stats = await (await fetch("/stats")).json();
      people = stats.index.people;
      maxBytes = (stats.limits && stats.limits.max_body_bytes) || 0;
      $("intro").textContent = text("introPeople", { people: number(people) });
    } catch (error) {
      // the page works without the figures
    }
  }

  async function start() {
    await preferredLanguage();
    applyLanguage();
    const touch = window.matchMedia("(pointer: coarse)").matches;
    $("camera-choice").hidden = !touch;
    $("drop-hint").hidden = touch;
    for (const id of ["camera", "photo"]) {
      $(id).addEventListener("change", (event) => {
        const file = event.target.files[0];
        event.target.value = "";  // the same photo chosen again is answered again
        if (file) answer(file);
      });
    }
    $("again").addEventListener("click", () => $("photo").click());
    document.addEventListener("dragover", (event) => {
      event.preventDefault();
      document.body.classList.add("dragging");
    });
    document.addEventListener("dragleave", () => document.body.classList.remove("dragging"));
    document.addEventListener("drop", (event) => {
      event.preventDefault();
      document.body.classList.remove("dragging");
      const file = event.dataTransfer.files[0];
      if (file) answer(file);
    });
    loadStats();
  }

  start();
})();
