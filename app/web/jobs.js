// The Gatys panel: POST /jobs, then follow the job (app/web/job-watch.js) for progress, losses,
// the loss curve and a fresh preview until it ends; the result is shown and downloadable.

import { getJson, request } from "./api.js";
import { formatDuration, formatEta, formatNumber } from "./format.js";
import { JobWatch, latestPreview, TERMINAL } from "./job-watch.js";
import {
  byId,
  clearError,
  ObjectUrls,
  setupDropzone,
  showDroppedFiles,
  showError,
  showMessage,
} from "./ui.js";

const PREVIEWS_PER_JOB = 25;
const LABELS = {
  queued: "Queued",
  running: "Running",
  succeeded: "Done",
  failed: "Failed",
  cancelled: "Cancelled",
};
const ANNOUNCEMENTS = {
  queued: "Job queued.",
  running: "Job running.",
  succeeded: "Job finished.",
  failed: "Job failed.",
  cancelled: "Job cancelled.",
};

export function initJobs(capabilities) {
  const panel = new JobPanel();
  if (capabilities.jobs) {
    panel.start();
  } else {
    panel.disable("This server does not run optimisation jobs.");
  }
}

class JobPanel {
  #content = null;
  #paintings = [];
  #previewIteration = 0;
  #watch = null;
  #urls = new ObjectUrls();
  #el = {
    form: byId("job-form"),
    contentInput: byId("job-content-input"),
    styleInput: byId("job-style-input"),
    iterations: byId("job-iterations"),
    size: byId("job-size"),
    optimizer: byId("job-optimizer"),
    submit: byId("job-submit"),
    message: byId("job-message"),
    error: byId("job-error"),
    empty: byId("job-empty"),
    view: byId("job-view"),
    contentLoss: byId("loss-content"),
    styleLoss: byId("loss-style"),
    tvLoss: byId("loss-tv"),
    eta: byId("job-eta"),
    image: byId("job-image"),
    caption: byId("job-caption"),
    download: byId("job-download"),
  };

  start() {
    const { contentInput, styleInput, form } = this.#el;
    setupDropzone(contentInput, ([file]) => {
      this.#content = file;
      showDroppedFiles(contentInput, [file], this.#urls.replace("content", file));
    });
    setupDropzone(styleInput, (files) => {
      this.#paintings = files;
      showDroppedFiles(styleInput, files, this.#urls.replace("painting", files[0]));
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#submit();
    });
    this.#watch = new JobWatch({
      prefix: "job",
      detail: byId("job-iteration"),
      hooks: {
        labels: LABELS,
        announcements: ANNOUNCEMENTS,
        describe: iterationText,
        start: () => this.#reset(),
        render: (job) => this.#renderLosses(job),
        tick: (job) => this.#refreshPreview(job),
        end: (job) => this.#finish(job),
      },
    });
    this.#watch.resume();
  }

  disable(text) {
    for (const control of this.#el.form.querySelectorAll("input, select, button")) {
      control.disabled = true;
    }
    showMessage(this.#el.message, text);
  }

  async #submit() {
    const { error, submit } = this.#el;
    clearError(error);
    if (!this.#content || this.#paintings.length === 0) {
      showError(error, "Choose a photo and at least one painting first.");
      return;
    }
    submit.disabled = true;
    try {
      this.#watch.follow(await getJson("/jobs", { method: "POST", body: this.#jobForm() }));
    } catch (failure) {
      showError(error, failure);
      submit.disabled = false;
    }
  }

  #jobForm() {
    const body = new FormData();
    body.append("content", this.#content);
    for (const painting of this.#paintings) {
      body.append("style", painting);
    }
    const iterations = this.#el.iterations.value.trim();
    const size = this.#el.size.value.trim();
    if (iterations) {
      body.append("iterations", iterations);
      body.append("preview_every", String(Math.max(1, Math.round(iterations / PREVIEWS_PER_JOB))));
    }
    if (size) {
      body.append("size", size);
    }
    body.append("optimizer", this.#el.optimizer.value);
    return body;
  }

  #reset() {
    const { empty, view, image, caption, download } = this.#el;
    this.#previewIteration = 0;
    empty.hidden = true;
    view.hidden = false;
    image.hidden = true;
    caption.textContent = "The latest preview appears here.";
    download.hidden = true;
  }

  async #refreshPreview(job) {
    const { iteration } = job.progress;
    if (job.state !== "running" || iteration <= this.#previewIteration) {
      return;
    }
    const blob = await latestPreview(job.id);
    if (blob) {
      await this.#showImage(blob, "preview");
      this.#previewIteration = iteration;
      this.#el.caption.textContent = `Preview · iteration ${iteration} of ${job.progress.total}`;
    }
  }

  async #finish(job) {
    if (job.state === "succeeded") {
      await this.#showResult(job);
    } else if (job.state === "failed") {
      showError(this.#el.error, `The job failed: ${job.error ?? "unknown error"}`);
    }
  }

  async #showResult(job) {
    const { caption, download } = this.#el;
    const response = await request(`/jobs/${job.id}/result`);
    const url = await this.#showImage(await response.blob(), "result");
    const size = response.headers.get("X-Image-Size")?.replace("x", " × ");
    const seconds = job.timings?.total_s;
    caption.textContent = ["Result", size && `${size} px`, seconds && `${formatDuration(seconds)}`]
      .filter(Boolean)
      .join(" · ");
    download.href = url;
    download.download = `atelier-job-${job.id.slice(0, 8)}.jpg`;
    download.hidden = false;
  }

  async #showImage(blob, slot) {
    const { image } = this.#el;
    const url = this.#urls.replace(slot, blob);
    image.src = url;
    await image.decode();
    image.alt = slot === "result" ? "Result of the optimisation job" : "Latest preview of the job";
    image.dataset.kind = slot;
    image.hidden = false;
    return url;
  }

  #renderLosses(job) {
    const { progress } = job;
    this.#el.contentLoss.textContent = formatNumber(progress.content_loss);
    this.#el.styleLoss.textContent = formatNumber(progress.style_loss);
    this.#el.tvLoss.textContent = formatNumber(progress.tv_loss);
    this.#el.eta.textContent = TERMINAL.has(job.state) ? "–" : formatEta(progress.eta_s);
  }
}

function iterationText(job) {
  const { iteration, total } = job.progress;
  if (job.state === "queued") {
    return "Waiting for a worker…";
  }
  if (job.state === "running") {
    return iteration > 0 ? `Iteration ${iteration} of ${total}` : "Preparing the networks…";
  }
  return `${iteration} of ${total} iterations`;
}
