// How a job looks on the page: its status line and progress bar, a line per event, the error
// (code and message), and the gallery of results with their downloads.
"use strict";

const JobView = (() => {
  const $ = (id) => document.getElementById(id);
  const STAGES = {
    analyzing_face: "analysing the face",
    denoising: "generating",
    face_detail: "refining the face",
    uploading: "saving the images",
  };
  let lastLine = "";

  function reset() {
    $("job").hidden = false;
    $("results").hidden = true;
    $("gallery").replaceChildren();
    $("events").replaceChildren();
    $("bar").max = 1;
    $("bar").value = 0;
    lastLine = "";
    hideError();
  }

  function describe(view) {
    const p = view.progress || {};
    switch (view.status) {
      case "queued":
        return view.queue_position ? `Queued: position ${view.queue_position}` : "Queued";
      case "running": {
        const stage = STAGES[p.stage] || "starting";
        const steps = p.total && (p.stage === "denoising" || p.stage === "face_detail") ? ` (step ${p.step} of ${p.total})` : "";
        const eta = p.eta_s !== null && p.eta_s !== undefined && p.step < p.total ? `, about ${Math.ceil(p.eta_s)} s left` : "";
        return `Running: ${stage}${steps}${eta}`;
      }
      case "succeeded":
        return "Done";
      case "failed":
        return "Failed";
      case "canceled":
        return "Canceled";
      default:
        return view.status;
    }
  }

  // One status JSON (from the event stream or a poll) onto the page.
  function show(view) {
    const status = $("status");
    status.dataset.status = view.status;
    status.textContent = describe(view);
    const p = view.progress;
    if (p && p.total) {
      $("bar").max = p.total;
      $("bar").value = p.step;
      $("bar").dataset.stage = p.stage || "";
    }
    if (view.status === "succeeded") $("bar").value = $("bar").max;
    $("cancel").hidden = !(view.status === "queued" || view.status === "running");
    const line = status.textContent.replace(/, about \d+ s left/, "");
    if (line !== lastLine) {
      const item = document.createElement("li");
      item.textContent = line;
      item.dataset.status = view.status;
      if (p) item.dataset.step = `${p.step}/${p.total}`;
      $("events").append(item);
      lastLine = line;
    }
    if (view.error) showError(view.error);
  }

  function showError(error) {
    $("error").hidden = false;
    $("error-code").textContent = error.code;
    $("error-message").textContent = error.message;
    ParamsForm.markInvalid(error.field === "width" || error.field === "height" ? "size" : error.field);
  }

  function hideError() {
    $("error").hidden = true;
    ParamsForm.markInvalid(null);
  }

  // The result JSON: one figure per image, with its identity score (and the judge that gave it),
  // whether it is below the job's min_identity_score, and whether the safety check withheld it.
  function gallery(result) {
    $("results").hidden = false;
    const base = result.base_model ? `Base model: ${result.base_model}. ` : "";
    const pose = result.pose_source === "photo" ? "The pose comes from the pose photo. " : "";
    $("result-note").textContent = base + pose + (result.note || "");
    $("result-note").dataset.baseModel = result.base_model || "";
    $("result-note").dataset.poseSource = result.pose_source || "";
    const figures = result.images.map((image) => {
      const figure = document.createElement("figure");
      const img = document.createElement("img");
      img.src = image.url;
      img.alt = `Generated image ${image.id}`;
      img.loading = "lazy";
      const caption = document.createElement("figcaption");
      const judge = result.identity_judge ? ` (${result.identity_judge})` : "";
      const score = typeof image.identity_score === "number"
        ? ` · identity ${image.identity_score.toFixed(2)}${judge}` : " · no face found";
      const below = image.below_threshold ? " · below threshold" : "";
      const withheld = image.nsfw ? " · withheld by the safety check (blurred)" : "";
      caption.textContent = `${image.id}${score}${below}${withheld}`;
      caption.dataset.identityScore = image.identity_score ?? "";
      caption.dataset.belowThreshold = String(Boolean(image.below_threshold));
      caption.dataset.nsfw = String(image.nsfw);
      const download = document.createElement("a");
      download.className = "button";
      download.href = image.url;
      download.download = image.file_name || `${image.id}.png`;
      download.target = "_blank";
      download.rel = "noopener";
      download.textContent = "Download";
      figure.append(img, caption, download);
      return figure;
    });
    $("gallery").replaceChildren(...figures);
  }

  return { reset, show, showError, hideError, gallery };
})();
