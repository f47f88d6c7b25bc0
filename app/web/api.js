// Talking to the Atelier API: problem+json errors become ApiError with the server's `detail`,
// and a 503 with Retry-After (models warming up, queue full) is retried a couple of times.

const BUSY_RETRIES = 3;
const MAX_RETRY_WAIT_MS = 5000;
const API_KEY_STORAGE = "atelier.apiKey";

export const API_KEY_CHANGED = "atelier:api-key-changed";

export class ApiError extends Error {
  constructor(message, { status = 0, code = "network_error" } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

export async function request(url, options = {}, retries = BUSY_RETRIES) {
  const response = await send(url, options);
  if (response.status === 503 && retries > 0 && response.headers.has("Retry-After")) {
    await sleep(retryDelayMs(response), options.signal);
    return request(url, options, retries - 1);
  }
  if (!response.ok) {
    throw await problemError(response);
  }
  return response;
}

// Only needed when the service is configured with API keys; kept in this browser only.
export function apiKey() {
  return localStorage.getItem(API_KEY_STORAGE) ?? "";
}

export function setApiKey(key) {
  if (key) {
    localStorage.setItem(API_KEY_STORAGE, key);
  } else {
    localStorage.removeItem(API_KEY_STORAGE);
  }
  window.dispatchEvent(new Event(API_KEY_CHANGED));
}

export async function getJson(url, options = {}) {
  const response = await request(url, options);
  return response.json();
}

export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(signal.reason);
      },
      { once: true },
    );
  });
}

export function isAbort(error) {
  return error?.name === "AbortError";
}

export async function loadCapabilities() {
  try {
    const schema = await getJson("/openapi.json");
    return {
      arbitraryStyle: formFields(schema, "/model/predict", "post").has("style_image"),
      saveStyle: Boolean(schema.paths["/model/styles"]?.post),
      deleteStyle: Object.entries(schema.paths).some(
        ([path, methods]) => /^\/model\/styles\/\{[^}]+\}$/.test(path) && methods.delete,
      ),
      jobs: Boolean(schema.paths["/jobs"]?.post),
      training: Boolean(schema.paths["/jobs/training/presets"]?.get),
    };
  } catch {
    return {
      arbitraryStyle: false,
      saveStyle: false,
      deleteStyle: false,
      jobs: false,
      training: false,
    };
  }
}

async function send(url, options) {
  const headers = new Headers(options.headers);
  if (apiKey()) {
    headers.set("X-API-Key", apiKey());
  }
  try {
    return await fetch(url, { ...options, headers });
  } catch (error) {
    if (isAbort(error)) {
      throw error;
    }
    throw new ApiError(`Could not reach the server: ${error.message}.`);
  }
}

function retryDelayMs(response) {
  const seconds = Number.parseFloat(response.headers.get("Retry-After"));
  const ms = Number.isFinite(seconds) ? seconds * 1000 : 1000;
  return Math.min(Math.max(ms, 250), MAX_RETRY_WAIT_MS);
}

async function problemError(response) {
  const status = response.status;
  try {
    const problem = await response.json();
    const message = sentence(problem.detail || problem.title || `The server answered ${status}`);
    const hint = status === 401 ? " Enter a valid key under “API key” at the top of the page." : "";
    return new ApiError(message + hint, { status, code: problem.code ?? "http_error" });
  } catch {
    return new ApiError(`The server answered ${status} ${response.statusText}.`.replace(" .", "."), {
      status,
      code: "http_error",
    });
  }
}

function sentence(text) {
  const trimmed = String(text).trim();
  const capitalised = trimmed.charAt(0).toUpperCase() + trimmed.slice(1);
  return /[.!?]$/.test(capitalised) ? capitalised : `${capitalised}.`;
}

function formFields(schema, path, method) {
  const body = schema.paths[path]?.[method]?.requestBody?.content?.["multipart/form-data"]?.schema;
  const resolved = body?.$ref ? resolveRef(schema, body.$ref) : body;
  return new Set(Object.keys(resolved?.properties ?? {}));
}

function resolveRef(schema, ref) {
  return ref
    .replace(/^#\//, "")
    .split("/")
    .reduce((node, key) => node?.[key], schema);
}
