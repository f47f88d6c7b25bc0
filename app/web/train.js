// The "Train a style" panel: a painting, a name and a preset -> POST /jobs/training; then, about
// once a second, GET /jobs/{id} (progress, time left), the loss curve's new points and a fresh
// preview on the server's test photo, until the job ends. DELETE /jobs/{id} cancels. The new
// style joins the style grid (and the Live and Video pickers) the moment it is saved.

import { getJson, request } from "./api.js";
import { formatDuration, formatEta } from "./format.js";
import { HistoryFeed } from "./history.js";
import { LossChart } from "./loss-chart.js";
import {
  byId,
  clearError,
  fileStem,
  ObjectUrls,
  setupDropzone,
  showDroppedFiles,
  showError,
  showMessage,
  slugify,
  STYLES_CHANGED,
} from "./ui.js";

const POLL_MS = 1000;
const PREVIEWS_PER_JOB = 25;
const STORAGE_KEY = "atelier.training";
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const STATE_LABELS = {
  queued: "Queued",
  running: "Training",
  succeeded: "Done",
  failed: "Failed",
  cancelled: "Cancelled",
};

export function initTraining(capabilities) {
  const panel = new TrainPanel();
  if (capabilities.training) {
    panel.start();
  } else {
    panel.disable("This server does not train styles.");
  }
}

class TrainPanel {
  #painting = null;
  #job = null;
  #pollTimer = 0;
  #previewIteration = 0;
  #announcedState = null;
  #chart = null;
  #history = null;
  #urls = new ObjectUrls();
  #el = {
    form: byId("train-form"),
    paintingInput: byId("train-painting-input"),
    name: byId("train-name"),
    presets: byId("train-presets"),
    submit: byId("train-submit"),
    message: byId("train-message"),
    error: byId("train-error"),
    empty: byId("train-empty"),
    view: byId("train-view"),
    state: byId("train-state"),
    cancel: byId("train-cancel"),
    progress: byId("train-progress"),
    percent: byId("train-percent"),
    step: byId("train-step"),
    preview: byId("train-preview"),
    caption: byId("train-caption"),
    chart: byId("train-chart"),
    done: byId("train-done"),
    doneText: byId("train-done-text"),
    downloadPth: byId("train-download-pth"),
    downloadOnnx: byId("train-download-onnx"),
  };

  async start() {
    const { paintingInput, name, form, cancel, downloadPth, downloadOnnx } = this.#el;
    this.#chart = new LossChart(this.#el.chart);
    setupDropzone(paintingInput, ([file]) => {
      this.#painting = file;
      showDroppedFiles(paintingInput, [file], this.#urls.replace("painting", file));
      if (!name.value) {
        name.value = slugify(fileStem(file.name));
      }
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#submit();
    });
    cancel.addEventListener("click", () => this.#cancel());
    downloadPth.addEventListener("click", () => this.#download("pth", downloadPth));
    downloadOnnx.addEventListener("click", () => this.#download("onnx", downloadOnnx));
    await this.#loadPresets();
    await this.#resume();
  }

  disable(text) {
    for (const control of this.#el.form.querySelectorAll("input, button")) {
      control.disabled = true;
    }
    this.#el.presets.replaceChildren();
    showMessage(this.#el.message, text);
  }

  // ---- presets -----------------------------------------------------------------------------

  async #loadPresets() {
    const { presets, submit, error } = this.#el;
    let body;
    try {
      body = await getJson("/jobs/training/presets");
    } catch (failure) {
      showError(error, failure);
      submit.disabled = true;
      return;
    }
    const template = byId("train-preset");
    const legend = presets.querySelector("legend");
    const choices = body.presets.map((preset, index) => {
      const choice = template.content.firstElementChild.cloneNode(true);
      const input = choice.querySelector("input");
      input.value = preset.name;
      input.checked = index === 0;
      input.dataset.iterations = String(preset.iterations);
      choice.querySelector(".preset-title").textContent = preset.title;
      choice.querySelector(".preset-detail").textContent =
        `${preset.iterations} steps · about ${formatDuration(preset.estimate_s)} here`;
      choice.title =
        body.basis === "measured"
          ? "Estimated from this server's last training job."
          : "Estimated from the throughput this server declares; it learns its own after a job.";
      return choice;
    });
    presets.replaceChildren(legend, ...choices);
    presets.setAttribute("aria-busy", "false");
    if (!body.photos_available) {
      submit.disabled = true;
      showMessage(
        this.#el.message,
        "This server has no training photos yet (its operator sets ATELIER_TRAINING_PHOTOS_DIR).",
      );
    }
  }

  #chosenIterations() {
    const checked = this.#el.presets.querySelector("input:checked");
    return checked ? Number(checked.dataset.iterations) : null;
  }

  // ---- submit, cancel, resume --------------------------------------------------------------

  async #submit() {
    const { error, submit, name, form } = this.#el;
    clearError(error);
    if (!this.#painting) {
      showError(error, "Choose a painting first.");
      return;
    }
    if (!form.reportValidity()) {
      return;
    }
    const iterations = this.#chosenIterations();
    const body = new FormData();
    body.append("painting", this.#painting);
    body.append("name", name.value.trim());
    if (iterations) {
      body.append("iterations", String(iterations));
      const every = Math.max(1, Math.round(iterations / PREVIEWS_PER_JOB));
      body.append("preview_interval", String(every));
    }
    submit.disabled = true;
    try {
      this.#watch(await getJson("/jobs/training", { method: "POST", body }));
    } catch (failure) {
      showError(error, failure);
      submit.disabled = false;
    }
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
    const { empty, view, preview, caption, done } = this.#el;
    empty.hidden = true;
    view.hidden = false;
    preview.hidden = true;
    done.hidden = true;
    caption.textContent = "The network’s latest attempt at a test photo appears here.";
    this.#render(job);
    this.#chart.reset(job.progress.total);
    this.#schedulePoll();
  }

  #schedulePoll() {
    this.#pollTimer = setTimeout(() => this.#poll(), POLL_MS);
  }

  async #poll() {
    try {
      const job = await getJson(`/jobs/${this.#job.id}`);
      clearError(this.#el.error);
      this.#render(job);
      this.#chart.append(await this.#history.next());
      await this.#refreshPreview(job);
      if (TERMINAL.has(job.state)) {
        this.#finish(job);
        return;
      }
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
    const { iteration, total } = job.progress;
    const ended = TERMINAL.has(job.state);
    if ((job.state !== "running" && !ended) || iteration <= this.#previewIteration) {
      return;
    }
    try {
      const response = await request(`/jobs/${job.id}/preview`, { cache: "no-store" }, 0);
      const { preview, caption } = this.#el;
      preview.src = this.#urls.replace("preview", await response.blob());
      await preview.decode();
      preview.alt = "The network being trained, on a test photo";
      preview.hidden = false;
      this.#previewIteration = iteration;
      caption.textContent = `Test photo after step ${iteration} of ${total}`;
    } catch (failure) {
      if (![404, 409].includes(failure.status)) {
        throw failure;
      }
    }
  }

  #finish(job) {
    this.#stop();
    if (job.state === "succeeded") {
      const name = job.options.name;
      const title = job.options.title || name;
      this.#el.doneText.textContent =
        `“${title}” is ready: it is selected in the style grid above` +
        (job.timings?.total_s ? `, trained in ${formatDuration(job.timings.total_s)}.` : ".");
      this.#el.done.hidden = false;
      window.dispatchEvent(new CustomEvent(STYLES_CHANGED, { detail: { name } }));
    } else if (job.state === "failed") {
      showError(this.#el.error, `Training failed: ${job.error ?? "unknown error"}`);
    }
  }

  async #download(format, button) {
    const name = this.#job?.options?.name;
    if (!name) {
      return;
    }
    clearError(this.#el.error);
    button.disabled = true;
    try {
      const url = `/model/styles/${encodeURIComponent(name)}/weights?format=${format}`;
      const blob = await (await request(url)).blob();
      const link = document.createElement("a");
      link.href = this.#urls.replace(`weights-${format}`, blob);
      link.download = `${name}.${format}`;
      link.click();
    } catch (failure) {
      showError(this.#el.error, failure);
    } finally {
      button.disabled = false;
    }
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
    const { state, cancel, progress, percent, step } = this.#el;
    const done = TERMINAL.has(job.state);
    const cancelling = job.cancel_requested && !done;
    state.dataset.state = job.state;
    state.textContent = cancelling ? "Cancelling" : (STATE_LABELS[job.state] ?? job.state);
    cancel.disabled = done || cancelling;
    const value = Math.min(100, Math.max(0, Math.round(job.progress.percent)));
    progress.value = value;
    progress.textContent = `${value}%`;
    percent.textContent = `${value}%`;
    step.textContent = stepText(job);
    this.#announce(job.state);
  }

  #announce(state) {
    if (state === this.#announcedState) {
      return;
    }
    this.#announcedState = state;
    const texts = {
      queued: "Waiting for a worker.",
      running: "Training.",
      succeeded: "Training finished.",
      failed: "Training failed.",
      cancelled: "Training cancelled.",
    };
    showMessage(this.#el.message, texts[state] ?? "", state === "succeeded" ? "ok" : "");
  }
}

function stepText(job) {
  const { iteration, total, eta_s: eta, metrics } = job.progress;
  if (job.state === "queued") {
    return "Waiting for a worker…";
  }
  if (job.state !== "running") {
    return `${iteration} of ${total} steps`;
  }
  if (iteration === 0) {
    return "Preparing the networks…";
  }
  const parts = [`Step ${iteration} of ${total}`];
  if (eta !== null && eta !== undefined) {
    parts.push(`${formatEta(eta)} left`);
  }
  if (metrics?.images_per_s) {
    parts.push(`${metrics.images_per_s.toFixed(1)} images/s`);
  }
  return parts.join(" · ");
}
