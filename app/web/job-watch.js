// Following one job for a panel: poll GET /jobs/{id} about once a second, render its state and
// progress, add the loss curve's new points (GET /jobs/{id}/history?after=N) to a chart, cancel
// it (DELETE /jobs/{id}), and pick it up again after a reload. What a panel shows on top
// (previews, results) comes through its hooks.

import { getJson, request } from "./api.js";
import { HistoryFeed } from "./history.js";
import { LossChart } from "./loss-chart.js";
import { byId, clearError, showError, showMessage } from "./ui.js";

const POLL_MS = 1000;
export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

export class JobWatch {
  #el;
  #hooks;
  #storageKey;
  #chart;
  #job = null;
  #history = null;
  #timer = 0;
  #announced = null;

  // The panel's elements are `${prefix}-state`, -cancel, -progress, -percent, -chart, -message,
  // -error and -submit, plus `detail` for the line that `hooks.describe(job)` fills.
  // `hooks`: labels and announcements (per state), and optional render(job), start(job),
  // tick(job) (async, every poll) and end(job) (async, once the job has ended).
  constructor({ prefix, detail, hooks }) {
    this.#storageKey = `atelier.${prefix}`;
    const names = ["state", "cancel", "progress", "percent", "chart", "message", "error", "submit"];
    this.#el = Object.fromEntries(names.map((name) => [name, byId(`${prefix}-${name}`)]));
    this.#el.detail = detail;
    this.#hooks = hooks;
    this.#chart = new LossChart(this.#el.chart);
    this.#el.cancel.addEventListener("click", () => this.#cancel());
  }

  get job() {
    return this.#job;
  }

  follow(job) {
    clearTimeout(this.#timer);
    this.#announced = null;
    this.#history = new HistoryFeed(job.id);
    localStorage.setItem(this.#storageKey, job.id);
    this.#hooks.start?.(job);
    this.#render(job);
    this.#chart.reset(job.progress.total);
    this.#schedule();
  }

  async resume() {
    const id = localStorage.getItem(this.#storageKey);
    if (!id) {
      return;
    }
    try {
      const job = await getJson(`/jobs/${encodeURIComponent(id)}`);
      if (TERMINAL.has(job.state)) {
        localStorage.removeItem(this.#storageKey);
      } else {
        this.#el.submit.disabled = true;
        this.follow(job);
      }
    } catch {
      localStorage.removeItem(this.#storageKey);
    }
  }

  #schedule() {
    this.#timer = setTimeout(() => this.#poll(), POLL_MS);
  }

  async #poll() {
    try {
      const job = await getJson(`/jobs/${this.#job.id}`);
      clearError(this.#el.error);
      this.#render(job);
      this.#chart.append(await this.#history.next());
      await this.#hooks.tick?.(job);
      if (TERMINAL.has(job.state)) {
        this.#stop();
        await this.#hooks.end?.(job);
        return;
      }
    } catch (failure) {
      showError(this.#el.error, failure);
      if (failure.status === 404) {
        this.#stop();
        return;
      }
    }
    this.#schedule();
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

  #stop() {
    clearTimeout(this.#timer);
    localStorage.removeItem(this.#storageKey);
    this.#el.submit.disabled = false;
    this.#el.cancel.disabled = true;
  }

  #render(job) {
    this.#job = job;
    const { state, cancel, progress, percent, detail } = this.#el;
    const done = TERMINAL.has(job.state);
    const cancelling = job.cancel_requested && !done;
    state.dataset.state = job.state;
    state.textContent = cancelling ? "Cancelling" : (this.#hooks.labels[job.state] ?? job.state);
    cancel.disabled = done || cancelling;
    const value = Math.min(100, Math.max(0, Math.round(job.progress.percent)));
    progress.value = value;
    progress.textContent = `${value}%`;
    percent.textContent = `${value}%`;
    detail.textContent = this.#hooks.describe(job);
    this.#hooks.render?.(job);
    if (job.state !== this.#announced) {
      this.#announced = job.state;
      const text = this.#hooks.announcements[job.state] ?? "";
      showMessage(this.#el.message, text, job.state === "succeeded" ? "ok" : "");
    }
  }
}

// The job's latest preview as a blob, or null while it has none yet.
export async function latestPreview(jobId) {
  try {
    const response = await request(`/jobs/${jobId}/preview`, { cache: "no-store" }, 0);
    return await response.blob();
  } catch (failure) {
    if ([404, 409].includes(failure.status)) {
      return null;
    }
    throw failure;
  }
}
