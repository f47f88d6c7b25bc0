// The Video panel: POST /jobs/video with the chosen clip and style, poll GET /jobs/{id} for
// frames done, frames per second and time left, then play (or show) the result.

import { getJson, request } from "./api.js";
import { fillStyleSelect } from "./live.js";
import { byId, clearError, setupDropzone, showDroppedFiles, showError, showMessage } from "./ui.js";

const POLL_MS = 1000;
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const DEFAULT_STABILIZE = "0.7";

export function initVideo() {
  if (byId("video")) {
    new VideoPanel().init();
  }
}

class VideoPanel {
  #file = null;
  #jobId = null;
  #resultUrl = null;
  #el = {
    panel: byId("video"),
    form: byId("video-form"),
    input: byId("video-input"),
    style: byId("video-style"),
    size: byId("video-size"),
    stabilize: byId("video-stabilize"),
    submit: byId("video-submit"),
    cancel: byId("video-cancel"),
    message: byId("video-message"),
    error: byId("video-error"),
    progress: byId("video-progress"),
    result: byId("video-result"),
    player: byId("video-player"),
    image: byId("video-image"),
    download: byId("video-download"),
  };

  async init() {
    const { input, form, cancel, style, error } = this.#el;
    setupDropzone(input, ([file]) => {
      this.#file = file;
      showDroppedFiles(input, [file], null);
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    cancel.addEventListener("click", () => this.cancel());
    try {
      await fillStyleSelect(style);
    } catch (failure) {
      showError(error, failure);
    }
  }

  async submit() {
    const el = this.#el;
    clearError(el.error);
    if (!this.#file) {
      showError(el.error, "Choose a clip first.");
      return;
    }
    const body = new FormData();
    body.append("video", this.#file);
    body.append("style", el.style.value);
    body.append("max_size", el.size.value);
    body.append("stabilize", el.stabilize.checked ? DEFAULT_STABILIZE : "0");
    el.submit.disabled = true;
    el.result.hidden = true;
    showMessage(el.message, "Uploading…");
    try {
      const job = await (await request("/jobs/video", { method: "POST", body })).json();
      this.#jobId = job.id;
      el.cancel.hidden = false;
      el.progress.hidden = false;
      el.progress.value = 0;
      await this.poll(job.id);
    } catch (failure) {
      showError(el.error, failure);
      showMessage(el.message, "");
    } finally {
      el.submit.disabled = false;
      el.cancel.hidden = true;
    }
  }

  async poll(jobId) {
    const el = this.#el;
    for (;;) {
      const job = await getJson(`/jobs/${jobId}`);
      const { iteration, total, eta_s: eta, metrics } = job.progress;
      el.progress.value = total ? (100 * iteration) / total : 0;
      el.panel.dataset.jobState = job.state;
      if (TERMINAL.has(job.state)) {
        if (job.state === "succeeded") {
          el.progress.value = 100;
          await this.show(jobId);
        } else {
          showMessage(el.message, job.state === "cancelled" ? "Cancelled." : "");
          if (job.error) {
            showError(el.error, job.error);
          }
        }
        return;
      }
      const fps = metrics?.fps ? `, ${metrics.fps.toFixed(1)} frames/s` : "";
      const left = eta ? `, about ${Math.ceil(eta)} s left` : "";
      showMessage(el.message, `${iteration} of ${total} frames${fps}${left}`);
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  }

  async show(jobId) {
    const el = this.#el;
    const blob = await (await request(`/jobs/${jobId}/result`)).blob();
    if (this.#resultUrl) {
      URL.revokeObjectURL(this.#resultUrl);
    }
    this.#resultUrl = URL.createObjectURL(blob);
    const isVideo = blob.type.startsWith("video/");
    el.player.hidden = !isVideo;
    el.image.hidden = isVideo;
    (isVideo ? el.player : el.image).src = this.#resultUrl;
    el.download.href = this.#resultUrl;
    el.download.download = `stylized.${blob.type.split("/")[1]}`;
    el.result.hidden = false;
    showMessage(el.message, "Done.", "ok");
  }

  async cancel() {
    if (this.#jobId) {
      await request(`/jobs/${this.#jobId}`, { method: "DELETE" }).catch(() => {});
    }
  }
}
