// lookalike's page: shrink a photo in the browser, post it to /query, show each face beside its matches.
"use strict";

(() => {
  const MAX_SIDE = 1280;  // pixels: a photo is shrunk to this on its longer side before it is sent
  const JPEG_QUALITY = 0.9;
  const WAIT_MS = 120000;  // a request not answered by then is given up
  const CROP_MARGIN = 0.6;  // around a face, in face sizes (as in the answer picture)

  // How an answer ended, in people's words: the server's table of outcomes (answers/outcomes.py), in the page.
  const OUTCOMES = JSON.parse(document.getElementById("outcomes").textContent);

  function message(key, seconds = 0) {
    const text = OUTCOMES.messages[key === "busy" && seconds === 1 ? "busyOneSecond" : key];
    return text.replace("{seconds}", String(seconds));
  }

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

  const percent = (similarity) => `${Math.round(similarity * 100)}%`;

  function comparing() {
    return people ? `Looking for faces and comparing them with ${people} people…` : "Looking for faces…";
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
    const status = (answer && answer.status) || OUTCOMES.http[String(response.status)];
    const key = (reason && OUTCOMES.rejections[reason]) || OUTCOMES.statuses[status] || "failed";
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
    image.alt = `Photo of ${match.name}`;
    image.src = match.photo_url;
    element.querySelector(".name").textContent = match.name;
    element.querySelector(".percent").textContent = percent(match.similarity);
  }

  function show(faces, picture) {
    const several = faces.length > 1;
    faces.forEach((face, index) => {
      const item = $("face-template").content.firstElementChild.cloneNode(true);
      const best = face.matches[0];
      const whose = several ? `Face ${index + 1} of ${faces.length}, from the left` : "Your face";
      item.querySelector(".face-title").textContent = whose;
      item.querySelector(".face-title").classList.toggle("visually-hidden", !several);
      const crop = item.querySelector(".crop");
      if (picture) {
        crop.setAttribute("aria-label", whose);
        item.querySelector(".yours figcaption").textContent = several ? `Face ${index + 1}` : "You";
        drawCrop(crop, picture, face.box);
      } else {
        item.querySelector(".yours").hidden = true;  // the browser could not read the photo; the server could
      }
      fillPerson(item.querySelector(".best"), best);
      item.querySelector(".summary").textContent =
        `${several ? "This face looks" : "You look"} like ${best.name}: ${percent(best.similarity)} alike.`;
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
    $("results-title").textContent = several ? "Your lookalikes" : "Your lookalike";
    $("results").hidden = false;
    $("results-title").focus();
  }

  // The answer picture of ?format=png, sent with the answer as a data URL (null: no face was drawn).
  function showPicture(dataUrl) {
    if (!dataUrl) return;
    const image = $("answer-picture");
    image.alt = "The answer as a picture: each face beside its lookalike's photo, with the name and percent.";
    image.src = dataUrl;
    $("answer-save").href = dataUrl;
    $("answer-save").hidden = false;
    $("answer").hidden = false;
  }

  async function answer(file) {
    const photo = ++current;
    clearResults();
    say("Getting your photo ready…", { progress: "waiting" });
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
    say("Sending your photo…", { progress: 0 });
    const response = await post("/query?picture=1", upload, "text", {
      onProgress: (fraction) => photo === current && say("Sending your photo…", { progress: Math.round(100 * fraction) }),
      onSent: () => photo === current && say(comparing(), { progress: "waiting" }),
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
    const lookedTwice = faces.some((face) => OUTCOMES.fallbackLooks.includes(face.detector));
    say((faces.length === 1 ? "Here is who you look like." :
         `${faces.length} faces were found; here is who each looks like, from the left.`) +
        (lookedTwice ? ` ${message("hardToSee")}` : ""));
    show(faces, picture);
    showPicture(result.picture);
  }

  async function loadStats() {
    try {
      const stats = await (await fetch("/stats")).json();
      people = stats.index.people;
      maxBytes = (stats.limits && stats.limits.max_body_bytes) || 0;
      $("intro").textContent = `Take a selfie or choose a photo, and see which of the ${people} people in ` +
                               "this gallery you look like most.";
    } catch (error) {
      // the page works without the figures
    }
  }

  function start() {
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
