// Entry point of the studio page: find out what this server offers, then wire up every panel.

import { apiKey, loadCapabilities, setApiKey } from "./api.js";
import { initInstant } from "./instant.js";
import { initJobs } from "./jobs.js";
import { initLive } from "./live.js";
import { initTraining } from "./train.js";
import { initVideo } from "./video.js";
import { byId, preventStrayDrops } from "./ui.js";

function setupApiKey() {
  const input = byId("api-key");
  input.value = apiKey();
  input.addEventListener("change", () => setApiKey(input.value.trim()));
}

async function main() {
  preventStrayDrops();
  setupApiKey();
  const capabilities = await loadCapabilities();
  document.documentElement.dataset.capabilities = Object.keys(capabilities)
    .filter((name) => capabilities[name])
    .join(" ");
  initInstant(capabilities);
  initJobs(capabilities);
  initTraining(capabilities);
  initLive(capabilities);
  initVideo();
  document.body.dataset.ready = "true";
}

main();
