// Entry point of the studio page: find out what this server offers, then wire up both panels.

import { loadCapabilities } from "./api.js";
import { initInstant } from "./instant.js";
import { initJobs } from "./jobs.js";
import { preventStrayDrops } from "./ui.js";

async function main() {
  preventStrayDrops();
  const capabilities = await loadCapabilities();
  document.documentElement.dataset.capabilities = Object.keys(capabilities)
    .filter((name) => capabilities[name])
    .join(" ");
  initInstant(capabilities);
  initJobs(capabilities);
  document.body.dataset.ready = "true";
}

main();
