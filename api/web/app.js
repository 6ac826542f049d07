// The page's wiring: server info, the API key, the photos (1 to max_face_images) and the optional
// pose photo, submit, following the job (server-sent events read with fetch, so the Authorization
// header goes along; polling when streaming fails), cancel and the result.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const KEY_STORAGE = "identity-body.api-key";
  const POLL_MS = 1000;
  const FINISHED = ["succeeded", "failed", "canceled"];
  let photos = []; // the chosen face photos, in the order they are sent
  let maxPhotos = 5; // /api/v1/info's max_face_images
  let current = null; // {id, abort: AbortController}

  const api = (path) => new URL(`api/v1/${path}`, document.baseURI).href;

  function headers() {
    const key = $("api-key").value.trim();
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  // Every error answer is {"error": {code, message, field}}; anything else still gets a code.
  async function errorOf(response) {
    try {
      const body = await response.json();
      if (body && body.error) return body.error;
    } catch (_) { /* not JSON */ }
    return { code: `http_${response.status}`, message: `The server answered ${response.status} ${response.statusText}.` };
  }

  async function loadInfo() {
    const response = await fetch(api("info"));
    if (!response.ok) throw await errorOf(response);
    const info = await response.json();
    ParamsForm.render(info);
    maxPhotos = info.max_face_images || maxPhotos;
    $("max-photos").textContent = String(maxPhotos);
    $("notice").hidden = !info.notice;
    $("notice").textContent = info.notice || "";
    $("notice").dataset.profiles = info.profiles.join(",");
    if (info.pose_photos) $("pose-hint").textContent = info.pose_photos.description;
    $("auth").hidden = !info.auth_required;
    $("api-key").value = localStorage.getItem(KEY_STORAGE) || "";
    $("api-key").addEventListener("change", () => localStorage.setItem(KEY_STORAGE, $("api-key").value.trim()));
    $("submit").disabled = false;
  }

  // Chosen, taken or dropped photos add to the list (a phone takes them one at a time); past the
  // server's most, the rest are left out and the page says so.
  function addPhotos(files) {
    JobView.hideError();
    const room = maxPhotos - photos.length;
    photos = photos.concat([...files].slice(0, Math.max(0, room)));
    if (files.length > room) {
      JobView.showError({ code: "too_many_face_images", field: "face_image",
        message: `Up to ${maxPhotos} photos of the same person are used; remove one to add another.` });
    }
    showPhotos();
  }

  function showPhotos() {
    const list = $("previews");
    for (const img of list.querySelectorAll("img")) URL.revokeObjectURL(img.src);
    list.replaceChildren(...photos.map((file, index) => {
      const item = document.createElement("li");
      item.dataset.field = `face_image[${index + 1}]`; // an error about photo n marks it
      const img = document.createElement("img");
      img.src = URL.createObjectURL(file);
      img.alt = `Photo ${index + 1}: ${file.name}`;
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "remove";
      remove.textContent = "×";
      remove.setAttribute("aria-label", `Remove photo ${index + 1}`);
      remove.addEventListener("click", () => { photos.splice(index, 1); JobView.hideError(); showPhotos(); });
      item.append(img, remove);
      return item;
    }));
    list.hidden = photos.length === 0;
    $("drop-text").textContent = photos.length === 0 ? "Drop face photos here"
      : photos.length === 1 ? photos[0].name : `${photos.length} photos of one person (up to ${maxPhotos})`;
  }

  function wirePhoto() {
    for (const id of ["photo", "camera"]) {
      $(id).addEventListener("change", (e) => { addPhotos(e.target.files); e.target.value = ""; });
    }
    const drop = $("drop");
    for (const name of ["dragenter", "dragover"]) {
      drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add("over"); });
    }
    for (const name of ["dragleave", "drop"]) drop.addEventListener(name, () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => { e.preventDefault(); addPhotos(e.dataTransfer.files); });
    $("pose-photo").addEventListener("change", () => { $("pose-clear").hidden = !$("pose-photo").files.length; });
    $("pose-clear").addEventListener("click", () => { $("pose-photo").value = ""; $("pose-clear").hidden = true; });
  }

  async function submit(event) {
    event.preventDefault();
    JobView.hideError();
    if (photos.length === 0) {
      JobView.showError({ code: "missing_field", message: "Choose or drop a face photo first.", field: "face_image" });
      return;
    }
    if (current) current.abort.abort();
    $("submit").disabled = true;
    try {
      const data = ParamsForm.appendTo($("job-form"), new FormData());
      for (const photo of photos) { // the field repeated, once per photo
        const upload = await PhotoShrink.forUpload(photo); // a large photo shrunk here (photo_shrink.js)
        data.append("face_image", upload, upload.name || "photo.jpg");
      }
      const pose = $("pose-photo").files[0];
      if (pose) {
        const poseUpload = await PhotoShrink.forUpload(pose);
        data.append("pose_image", poseUpload, poseUpload.name || "pose.jpg");
      }
      const response = await fetch(api("generate-identity-body"), { method: "POST", body: data, headers: headers() });
      if (!response.ok) throw await errorOf(response);
      const accepted = await response.json();
      JobView.reset();
      current = { id: accepted.request_id, abort: new AbortController() };
      JobView.show(accepted);
      $("job").scrollIntoView({ behavior: "smooth", block: "start" });
      follow(current);
    } catch (error) {
      JobView.showError(error.code ? error : { code: "network_error", message: `The server could not be reached (${error.message}).` });
    } finally {
      $("submit").disabled = false;
    }
  }

  // Follow a job until it finishes: the event stream (opened again when the server ends it early),
  // polling once the stream breaks.
  async function follow(job) {
    let last = null;
    try {
      while (!(last && FINISHED.includes(last.status))) {
        const seen = await stream(job, (view) => { last = view; JobView.show(view); });
        if (job.abort.signal.aborted) return; // the job is gone (its error is shown) or replaced
        if (seen === null) throw new Error("the event stream ended without an event");
      }
    } catch (error) {
      if (job.abort.signal.aborted) return;
      $("status").dataset.transport = "polling";
    }
    while (!(last && FINISHED.includes(last.status))) {
      if (job.abort.signal.aborted) return;
      if (last) await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      const response = await fetch(api(`jobs/${job.id}`), { headers: headers(), signal: job.abort.signal });
      if (!response.ok) { JobView.showError(await errorOf(response)); return; }
      last = await response.json();
      JobView.show(last);
    }
    if (last.status === "succeeded") await showResult(job);
  }

  // Read text/event-stream from fetch: "event:" and "data:" lines, a blank line ends an event.
  async function stream(job, onStatus) {
    const response = await fetch(api(`jobs/${job.id}/events`), { headers: headers(), signal: job.abort.signal });
    if (!response.ok || !response.body) throw await errorOf(response);
    $("status").dataset.transport = "events";
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let last = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return last;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = /^event: (.*)$/m.exec(block);
        const data = /^data: (.*)$/m.exec(block);
        if (!event || !data) continue;
        const body = JSON.parse(data[1]);
        if (event[1] === "error") { JobView.showError(body.error); job.abort.abort(); return last; }
        last = body;
        onStatus(body);
      }
    }
  }

  async function showResult(job) {
    const response = await fetch(api(`jobs/${job.id}/result`), { headers: headers(), signal: job.abort.signal });
    if (!response.ok) { JobView.showError(await errorOf(response)); return; }
    const result = await response.json();
    JobView.gallery(result);
    $("result-photos").textContent = result.face_image_count > 1
      ? `One identity from ${result.face_image_count} photos; the face laid out from photo ${result.keypoints_face_image}.` : "";
  }

  async function cancel() {
    if (!current) return;
    const response = await fetch(api(`jobs/${current.id}/cancel`), { method: "POST", headers: headers() });
    if (!response.ok) { JobView.showError(await errorOf(response)); return; }
    JobView.show(await response.json());
  }

  document.addEventListener("DOMContentLoaded", () => {
    wirePhoto();
    $("job-form").addEventListener("submit", submit);
    $("cancel").addEventListener("click", cancel);
    loadInfo().catch((error) => JobView.showError(error.code ? error : { code: "network_error", message: String(error) }));
  });
})();
