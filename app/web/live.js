// The Live panel: the browser's camera, stylized continuously over the /live WebSocket.
//
// Protocol (see README "Video and live"): a token from POST /live/token opens
// /live?token=...; the page sends {"type": "style", ...} text messages and binary frames
// (4-byte big-endian frame id + JPEG), and gets back binary results (id, server µs, JPEG) or
// text answers ("dropped", "busy", "error") for frames it will not see. At most two frames are
// in flight: one being stylized, one waiting, so latency stays one frame deep.

import { getJson, request } from "./api.js";
import { byId, clearError, showError, showMessage, STYLES_CHANGED } from "./ui.js";

const CAPTURE_WIDTH = 320;
const CAPTURE_HEIGHT = 240;
const JPEG_QUALITY = 0.8;
const MAX_IN_FLIGHT = 2;
const FPS_WINDOW_MS = 2000;
const DEFAULT_STYLE = "starry-swirls";

export function initLive() {
  const panel = byId("live");
  if (!panel || !navigator.mediaDevices?.getUserMedia || !window.WebSocket) {
    if (panel) {
      showMessage(byId("live-message"), "This browser cannot share its camera with the page.");
      byId("live-start").disabled = true;
    }
    return;
  }
  new LiveSession(panel).init();
}

// The catalog's styles as <option>s (the live stream and video jobs take any catalog name),
// refilled when a style is trained; the current choice stays.
export async function fillStyleSelect(select) {
  await refillStyleSelect(select);
  window.addEventListener(STYLES_CHANGED, () => refillStyleSelect(select).catch(() => {}));
}

async function refillStyleSelect(select) {
  const current = select.value || DEFAULT_STYLE;
  const catalog = await getJson("/model/styles");
  select.replaceChildren(
    ...catalog.styles.map((style) => {
      const option = new Option(style.title || style.name, style.name);
      option.selected = style.name === current;
      return option;
    }),
  );
}

class LiveSession {
  constructor(panel) {
    this.panel = panel;
    this.camera = byId("live-camera");
    this.output = byId("live-output");
    this.placeholder = byId("live-placeholder");
    this.styleSelect = byId("live-style");
    this.startButton = byId("live-start");
    this.stopButton = byId("live-stop");
    this.message = byId("live-message");
    this.error = byId("live-error");
    this.canvas = document.createElement("canvas");
    this.canvas.width = CAPTURE_WIDTH;
    this.canvas.height = CAPTURE_HEIGHT;
    this.reset();
  }

  reset() {
    this.socket = null;
    this.stream = null;
    this.nextId = 1;
    this.sentAt = new Map();
    this.inFlight = 0;
    this.capturing = false;
    this.shown = [];
    this.frames = 0;
  }

  async init() {
    this.startButton.addEventListener("click", () => this.start());
    this.stopButton.addEventListener("click", () => this.stop("Stopped."));
    this.styleSelect.addEventListener("change", () => this.sendStyle());
    try {
      await fillStyleSelect(this.styleSelect);
    } catch (error) {
      showError(this.error, error);
    }
  }

  setState(state) {
    this.panel.dataset.liveState = state;
    this.startButton.disabled = state !== "idle" && state !== "closed";
    this.stopButton.disabled = !this.startButton.disabled;
  }

  async start() {
    clearError(this.error);
    this.reset();
    this.setState("connecting");
    showMessage(this.message, "Asking for the camera…");
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        video: { width: CAPTURE_WIDTH, height: CAPTURE_HEIGHT },
        audio: false,
      });
      this.camera.srcObject = this.stream;
      await this.camera.play();
      const grant = await (await request("/live/token", { method: "POST" })).json();
      this.connect(grant.token);
    } catch (error) {
      this.stop();
      showError(this.error, error.name === "NotAllowedError" ? "Camera access was refused." : error);
    }
  }

  connect(token) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}/live?token=${encodeURIComponent(token)}`);
    socket.binaryType = "arraybuffer";
    socket.addEventListener("message", (event) => this.onMessage(event.data));
    socket.addEventListener("close", (event) => this.onClose(event));
    this.socket = socket;
  }

  onMessage(data) {
    if (typeof data !== "string") {
      this.onFrame(data);
      return;
    }
    const message = JSON.parse(data);
    if (message.type === "ready") {
      this.sendStyle();
      this.setState("live");
      showMessage(this.message, "Live.", "ok");
      this.pump();
    } else if (message.type === "dropped" || message.type === "busy") {
      this.answered(message.frame);
    } else if (message.type === "error") {
      showError(this.error, message.detail || message.code);
      if (message.frame !== undefined) {
        this.answered(message.frame);
      }
    }
  }

  onFrame(buffer) {
    const view = new DataView(buffer);
    const id = view.getUint32(0);
    const serverUs = view.getUint32(4);
    const blob = new Blob([buffer.slice(8)], { type: "image/jpeg" });
    const url = URL.createObjectURL(blob);
    const previous = this.output.src;
    this.output.src = url;
    // Shown from the first frame on: an <img> without a source draws a broken-image icon.
    this.output.hidden = false;
    this.placeholder.hidden = true;
    if (previous.startsWith("blob:")) {
      URL.revokeObjectURL(previous);
    }
    const now = performance.now();
    const sent = this.sentAt.get(id);
    this.shown.push(now);
    this.shown = this.shown.filter((time) => now - time <= FPS_WINDOW_MS);
    this.frames += 1;
    byId("live-frames").textContent = String(this.frames);
    if (this.shown.length > 1) {
      const fps = ((this.shown.length - 1) * 1000) / (now - this.shown[0]);
      byId("live-fps").textContent = fps.toFixed(1);
    }
    if (sent !== undefined) {
      byId("live-latency").textContent = `${Math.round(now - sent)} ms`;
    }
    byId("live-server").textContent = `${Math.round(serverUs / 1000)} ms`;
    this.answered(id);
  }

  answered(id) {
    if (this.sentAt.delete(id)) {
      this.inFlight = Math.max(0, this.inFlight - 1);
    }
    this.pump();
  }

  // Capture and send while fewer than MAX_IN_FLIGHT frames are unanswered.
  async pump() {
    if (this.capturing || !this.isOpen() || this.inFlight >= MAX_IN_FLIGHT) {
      return;
    }
    this.capturing = true;
    try {
      const context = this.canvas.getContext("2d");
      context.drawImage(this.camera, 0, 0, CAPTURE_WIDTH, CAPTURE_HEIGHT);
      const blob = await new Promise((resolve) =>
        this.canvas.toBlob(resolve, "image/jpeg", JPEG_QUALITY),
      );
      if (!blob || !this.isOpen()) {
        return;
      }
      const id = this.nextId++;
      const payload = new Uint8Array(4 + blob.size);
      new DataView(payload.buffer).setUint32(0, id);
      payload.set(new Uint8Array(await blob.arrayBuffer()), 4);
      this.sentAt.set(id, performance.now());
      this.inFlight += 1;
      this.socket.send(payload);
    } finally {
      this.capturing = false;
    }
    this.pump();
  }

  sendStyle() {
    if (this.isOpen() && this.styleSelect.value) {
      this.socket.send(JSON.stringify({ type: "style", style: this.styleSelect.value }));
    }
  }

  isOpen() {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  onClose(event) {
    const wasLive = this.panel.dataset.liveState === "live";
    this.stopCamera();
    this.socket = null;
    this.setState("closed");
    if (event.code === 4401) {
      showError(this.error, "The live token was refused; check the API key at the top of the page.");
    } else if (event.code === 1013) {
      showError(this.error, "The server is busy with other live streams; try again shortly.");
    } else if (wasLive && event.code !== 1000 && event.code !== 1005) {
      showError(this.error, `The live stream closed (${event.code}).`);
    }
  }

  stop(text = "") {
    if (this.socket) {
      this.socket.close(1000);
    }
    this.stopCamera();
    this.setState("closed");
    if (text) {
      showMessage(this.message, text);
    }
  }

  stopCamera() {
    for (const track of this.stream?.getTracks() ?? []) {
      track.stop();
    }
    this.stream = null;
    this.camera.srcObject = null;
  }
}
