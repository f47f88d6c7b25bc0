// A job's loss curve, fetched incrementally: each call asks GET /jobs/{id}/history only for the
// points past the last one it got.

import { getJson } from "./api.js";

export class HistoryFeed {
  #jobId;
  #after = 0;

  constructor(jobId) {
    this.#jobId = jobId;
  }

  async next() {
    const url = `/jobs/${encodeURIComponent(this.#jobId)}/history?after=${this.#after}`;
    const body = await getJson(url);
    this.#after = body.last_step;
    return body.points;
  }
}
