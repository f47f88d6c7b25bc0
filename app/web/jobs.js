// The Gatys panel: POST /jobs, then poll GET /jobs/{id} about once a second for progress, losses
// and a fresh preview, until the job ends; DELETE /jobs/{id} cancels it.

import { getJson, request } from "./api.js";
import { formatDuration, formatEta, formatNumber } from "./format.js";
import { HistoryFeed } from "./history.js";
import { LossChart } from "./loss-chart.js";
import {
  byId,
  clearError,
  ObjectUrls,
  setupDropzone,
  showDroppedFiles,
  showError,
  showMessage,
} from "./ui.js";

const POLL_MS = 1000;
const PREVIEWS_PER_JOB = 25;
const STORAGE_KEY = "atelier.job";
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const STATE_LABELS = {
  queued: "Queued",
  running: "Running",
  succeeded: "Done",
  failed: "Failed",
  cancelled: "Cancelled",
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
  #job = null;
  #announcedState = null;
  #previewIteration = 0;
  #pollTimer = 0;
  #chart = null;
  #history = null;
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
    state: byId("job-state"),
    cancel: byId("job-cancel"),
    progress: byId("job-progress"),
    percent: byId("job-percent"),
    iteration: byId("job-iteration"),
    contentLoss: byId("loss-content"),
    styleLoss: byId("loss-style"),
    tvLoss: byId("loss-tv"),
    eta: byId("job-eta"),
    image: byId("job-image"),
    caption: byId("job-caption"),
    download: byId("job-download"),
    chart: byId("job-chart"),
  };

  start() {
    const { contentInput, styleInput, form, cancel } = this.#el;
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
    cancel.addEventListener("click", () => this.#cancel());
    this.#chart = new LossChart(this.#el.chart);
    this.#resume();
  }

  disable(text) {
    for (const control of this.#el.form.querySelectorAll("input, select, button")) {
      control.disabled = true;
    }
    showMessage(this.#el.message, text);
  }

  // ---- submit, cancel, resume --------------------------------------------------------------

  async #submit() {
    const { error, submit } = this.#el;
    clearError(error);
    if (!this.#content || this.#paintings.length === 0) {
      showError(error, "Choose a photo and at least one painting first.");
      return;
    }
    submit.disabled = true;
    try {
      const job = await getJson("/jobs", { method: "POST", body: this.#jobForm() });
      this.#watch(job);
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

  async #cancel() {
    clearError(this.#el.error);
    this.#el.cancel.disabled = true;
    try {
      this.#render(await getJson(`/jobs/${this.#job.id}`, { method: "DELETE" }));
    } catch (failure) {
      showError(this.#el.error, failure);
      this.#el.cancel.disabled = false;
    }
  }

  async #resume() {
    const id = localStorage.getItem(STORAGE_KEY);
    if (!id) {
      return;
    }
    try {
      const job = await getJson(`/jobs/${encodeURIComponent(id)}`);
      if (TERMINAL.has(job.state)) {
        localStorage.removeItem(STORAGE_KEY);
      } else {
        this.#el.submit.disabled = true;
        this.#watch(job);
      }
    } catch {
      localStorage.removeItem(STORAGE_KEY);
    }
  }

  // ---- polling -----------------------------------------------------------------------------

  #watch(job) {
    clearTimeout(this.#pollTimer);
    this.#job = job;
    this.#announcedState = null;
    this.#previewIteration = 0;
    this.#history = new HistoryFeed(job.id);
    localStorage.setItem(STORAGE_KEY, job.id);
    const { empty, view, image, caption, download } = this.#el;
    empty.hidden = true;
    view.hidden = false;
    image.hidden = true;
    caption.textContent = "The latest preview appears here.";
    download.hidden = true;
    this.#render(job);
    this.#chart.reset(job.progress.total);
    this.#schedulePoll();
  }

  #schedulePoll() {
    this.#pollTimer = setTimeout(() => this.#poll(), POLL_MS);
  }

  async #poll() {
    const id = this.#job.id;
    try {
      const job = await getJson(`/jobs/${id}`);
      clearError(this.#el.error);
      this.#render(job);
      this.#chart.append(await this.#history.next());
      if (TERMINAL.has(job.state)) {
        await this.#finish(job);
        return;
      }
      await this.#refreshPreview(job);
    } catch (failure) {
      showError(this.#el.error, failure);
      if (failure.status === 404) {
        this.#stop();
        return;
      }
    }
    this.#schedulePoll();
  }

  async #refreshPreview(job) {
    const { iteration } = job.progress;
    if (job.state !== "running" || iteration <= this.#previewIteration) {
      return;
    }
    try {
      const response = await request(`/jobs/${job.id}/preview`, { cache: "no-store" }, 0);
      await this.#showImage(await response.blob(), "preview");
      this.#previewIteration = iteration;
      this.#el.caption.textContent = `Preview · iteration ${iteration} of ${job.progress.total}`;
    } catch (failure) {
      if (![404, 409].includes(failure.status)) {
        throw failure;
      }
    }
  }

  async #finish(job) {
    this.#stop();
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

  #stop() {
    clearTimeout(this.#pollTimer);
    localStorage.removeItem(STORAGE_KEY);
    this.#el.submit.disabled = false;
    this.#el.cancel.disabled = true;
  }

  // ---- rendering ---------------------------------------------------------------------------

  #render(job) {
    this.#job = job;
    const { state, cancel, progress, percent, iteration } = this.#el;
    const done = TERMINAL.has(job.state);
    const cancelling = job.cancel_requested && !done;
    state.dataset.state = job.state;
    state.textContent = cancelling ? "Cancelling" : STATE_LABELS[job.state] ?? job.state;
    cancel.disabled = done || cancelling;
    const value = Math.min(100, Math.max(0, Math.round(job.progress.percent)));
    progress.value = value;
    progress.textContent = `${value}%`;
    percent.textContent = `${value}%`;
    iteration.textContent = iterationText(job);
    this.#renderLosses(job.progress, done);
    this.#announce(job.state);
  }

  #renderLosses(progress, done) {
    this.#el.contentLoss.textContent = formatNumber(progress.content_loss);
    this.#el.styleLoss.textContent = formatNumber(progress.style_loss);
    this.#el.tvLoss.textContent = formatNumber(progress.tv_loss);
    this.#el.eta.textContent = done ? "–" : formatEta(progress.eta_s);
  }

  #announce(state) {
    if (state === this.#announcedState) {
      return;
    }
    this.#announcedState = state;
    const texts = {
      queued: "Job queued.",
      running: "Job running.",
      succeeded: "Job finished.",
      failed: "Job failed.",
      cancelled: "Job cancelled.",
    };
    showMessage(this.#el.message, texts[state] ?? "", state === "succeeded" ? "ok" : "");
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
