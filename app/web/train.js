// The "Train a style" panel: a painting, a name and a preset -> POST /jobs/training; then follow
// the job (app/web/job-watch.js): progress and time left, the loss curve, and a fresh preview of
// the network on the server's test photo, until it ends. The new style joins the style grid
// (and the Live and Video pickers) the moment it is saved; its weights download from here.

import { getJson, request } from "./api.js";
import { formatDuration, formatEta, formatNumber } from "./format.js";
import { JobWatch, latestPreview } from "./job-watch.js";
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

const PREVIEWS_PER_JOB = 25;
const LABELS = {
  queued: "Queued",
  running: "Training",
  succeeded: "Done",
  failed: "Failed",
  cancelled: "Cancelled",
};
const ANNOUNCEMENTS = {
  queued: "Waiting for a worker.",
  running: "Training.",
  succeeded: "Training finished.",
  failed: "Training failed.",
  cancelled: "Training cancelled.",
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
  #previewIteration = 0;
  #watch = null;
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
    preview: byId("train-preview"),
    caption: byId("train-caption"),
    done: byId("train-done"),
    doneText: byId("train-done-text"),
    downloadPth: byId("train-download-pth"),
    downloadOnnx: byId("train-download-onnx"),
  };

  async start() {
    const { paintingInput, name, form, downloadPth, downloadOnnx } = this.#el;
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
    downloadPth.addEventListener("click", () => this.#download("pth", downloadPth));
    downloadOnnx.addEventListener("click", () => this.#download("onnx", downloadOnnx));
    this.#watch = new JobWatch({
      prefix: "train",
      detail: byId("train-step"),
      hooks: {
        labels: LABELS,
        announcements: ANNOUNCEMENTS,
        describe: stepText,
        start: () => this.#reset(),
        tick: (job) => this.#refreshPreview(job),
        end: (job) => this.#finish(job),
      },
    });
    await this.#loadPresets();
    await this.#watch.resume();
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
      input.dataset.batchSize = String(preset.batch_size);
      input.dataset.cropSize = String(preset.crop_size);
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

  // The chosen preset's training options, as the estimate assumed them.
  #chosenPreset() {
    const checked = this.#el.presets.querySelector("input:checked");
    if (!checked) {
      return null;
    }
    const { iterations, batchSize, cropSize } = checked.dataset;
    return { iterations: Number(iterations), batchSize, cropSize };
  }

  // ---- a run ---------------------------------------------------------------------------------

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
    const preset = this.#chosenPreset();
    const body = new FormData();
    body.append("painting", this.#painting);
    body.append("name", name.value.trim());
    if (preset) {
      const every = Math.max(1, Math.round(preset.iterations / PREVIEWS_PER_JOB));
      body.append("iterations", String(preset.iterations));
      body.append("batch_size", preset.batchSize);
      body.append("crop_size", preset.cropSize);
      body.append("preview_interval", String(every));
    }
    submit.disabled = true;
    try {
      this.#watch.follow(await getJson("/jobs/training", { method: "POST", body }));
    } catch (failure) {
      showError(error, failure);
      submit.disabled = false;
    }
  }

  #reset() {
    const { empty, view, preview, caption, done } = this.#el;
    this.#previewIteration = 0;
    empty.hidden = true;
    view.hidden = false;
    preview.hidden = true;
    done.hidden = true;
    caption.textContent = "The network’s latest attempt at a test photo appears here.";
  }

  // Also once the job has ended: a finished run's last preview is the trained network's.
  async #refreshPreview(job) {
    const { iteration, total } = job.progress;
    if (job.state === "queued" || iteration <= this.#previewIteration) {
      return;
    }
    const blob = await latestPreview(job.id);
    if (blob) {
      const { preview, caption } = this.#el;
      preview.src = this.#urls.replace("preview", blob);
      await preview.decode();
      preview.alt = "The network being trained, on a test photo";
      preview.hidden = false;
      this.#previewIteration = iteration;
      caption.textContent = `Test photo after step ${iteration} of ${total}`;
    }
  }

  #finish(job) {
    if (job.state === "succeeded") {
      const name = job.options.name;
      const title = job.options.title || name;
      const seconds = job.timings?.total_s;
      const took = seconds ? `, trained in ${formatDuration(seconds)}` : "";
      this.#el.doneText.textContent =
        `“${title}” is ready: it is selected in the style grid above${took}.`;
      this.#el.done.hidden = false;
      window.dispatchEvent(new CustomEvent(STYLES_CHANGED, { detail: { name } }));
    } else if (job.state === "failed") {
      showError(this.#el.error, `Training failed: ${job.error ?? "unknown error"}`);
    }
  }

  async #download(format, button) {
    const name = this.#watch.job?.options?.name;
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
    parts.push(`${formatNumber(metrics.images_per_s)} images/s`);
  }
  return parts.join(" · ");
}
