// The instant panel: photo + style + controls -> POST /model/predict, shown as a before/after
// comparison with a download link; a dropped painting can be used directly or saved as a style.

import { API_KEY_CHANGED, isAbort, request } from "./api.js";
import { Catalog, PAINTING } from "./catalog.js";
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
  titleCase,
} from "./ui.js";

const RERUN_DELAY_MS = 300;
const EXTENSIONS = { jpeg: "jpg", png: "png", webp: "webp", avif: "avif" };

export function initInstant(capabilities) {
  new InstantStudio(capabilities).start();
}

class InstantStudio {
  #capabilities;
  #catalog;
  #photo = null;
  #painting = null;
  #controller = null;
  #rerunTimer = 0;
  #urls = new ObjectUrls();
  #el = {
    photoInput: byId("photo-input"),
    painting: byId("painting"),
    paintingInput: byId("painting-input"),
    paintingHint: byId("painting-hint"),
    paintingNote: byId("painting-note"),
    saveForm: byId("save-style"),
    styleName: byId("style-name"),
    styleTitle: byId("style-title"),
    saveButton: byId("save-style-button"),
    strength: byId("strength"),
    strengthValue: byId("strength-value"),
    maxSize: byId("max-size"),
    format: byId("format"),
    preserveColor: byId("preserve-color"),
    stylize: byId("stylize"),
    message: byId("studio-message"),
    error: byId("studio-error"),
    stage: byId("stage"),
    stageEmpty: byId("stage-empty"),
    compare: byId("compare"),
    before: byId("before-image"),
    result: byId("result-image"),
    slider: byId("compare-slider"),
    meta: byId("result-meta"),
    download: byId("download"),
  };

  constructor(capabilities) {
    this.#capabilities = capabilities;
    this.#catalog = new Catalog(byId("style-grid"), {
      canDelete: capabilities.deleteStyle,
      onSelect: () => this.#stylizeIfReady(),
      onRemove: (name, title) => this.#removeStyle(name, title),
    });
  }

  start() {
    setupDropzone(this.#el.photoInput, ([file]) => this.#setPhoto(file));
    this.#setupPainting();
    this.#setupControls();
    this.#setupCompare();
    this.#el.stylize.addEventListener("click", () => this.#stylize());
    window.addEventListener(STYLES_CHANGED, (event) => this.#showNewStyle(event.detail?.name));
    this.#el.saveForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#saveStyle();
    });
    window.addEventListener(API_KEY_CHANGED, () => this.#reloadCatalog());
    this.#reloadCatalog();
  }

  async #reloadCatalog() {
    try {
      await this.#catalog.load();
      clearError(this.#el.error);
    } catch (error) {
      showError(this.#el.error, error);
      return;
    }
    await this.#stylizeIfReady();
  }

  // ---- inputs ------------------------------------------------------------------------------

  #setPhoto(file) {
    this.#photo = file;
    const url = this.#urls.replace("photo", file);
    showDroppedFiles(this.#el.photoInput, [file], url);
    this.#el.before.src = url;
    this.#el.compare.hidden = true;
    this.#el.download.hidden = true;
    this.#el.stageEmpty.hidden = false;
    this.#el.meta.textContent = "";
    this.#stylizeIfReady();
  }

  #setupPainting() {
    const { arbitraryStyle, saveStyle } = this.#capabilities;
    if (!arbitraryStyle && !saveStyle) {
      this.#el.painting.hidden = true;
      return;
    }
    if (!arbitraryStyle) {
      this.#el.paintingHint.innerHTML = "<strong>Drop a painting</strong> to save it as a style";
    }
    setupDropzone(this.#el.paintingInput, ([file]) => this.#setPainting(file));
  }

  #setPainting(file) {
    this.#painting = file;
    const url = this.#urls.replace("painting", file);
    showDroppedFiles(this.#el.paintingInput, [file], url);
    const slug = slugify(fileStem(file.name));
    this.#el.styleName.value = slug;
    this.#el.styleTitle.placeholder = titleCase(slug) || "My Painting";
    this.#el.saveForm.hidden = !this.#capabilities.saveStyle;
    if (this.#capabilities.arbitraryStyle) {
      this.#catalog.usePainting(url);
      this.#stylizeIfReady();
    }
  }

  #setupControls() {
    const { strength, strengthValue, maxSize, format, preserveColor } = this.#el;
    strength.addEventListener("input", () => {
      strengthValue.textContent = `${Math.round(strength.value * 100)}%`;
    });
    for (const control of [strength, maxSize, format, preserveColor]) {
      control.addEventListener("change", () => this.#scheduleRerun());
    }
  }

  #setupCompare() {
    const { slider, compare } = this.#el;
    slider.addEventListener("input", () => compare.style.setProperty("--split", `${slider.value}%`));
  }

  #scheduleRerun() {
    clearTimeout(this.#rerunTimer);
    this.#rerunTimer = setTimeout(() => this.#stylizeIfReady(), RERUN_DELAY_MS);
  }

  // ---- stylize -----------------------------------------------------------------------------

  async #stylizeIfReady() {
    if (this.#photo && this.#catalog.selected()) {
      await this.#stylize();
    }
  }

  async #stylize() {
    clearError(this.#el.error);
    const style = this.#catalog.selected();
    if (!this.#photo) {
      showMessage(this.#el.message, "Choose a photo first.");
      return;
    }
    if (!style) {
      showMessage(this.#el.message, "Choose a style first.");
      return;
    }
    this.#controller?.abort();
    const controller = new AbortController();
    this.#controller = controller;
    this.#setBusy(true, `Stylizing with ${this.#catalog.titleOf(style)}…`);
    try {
      const { url, body } = this.#predictRequest(style);
      const response = await request(url, { method: "POST", body, signal: controller.signal });
      await this.#showResult(await response.blob(), style, response.headers);
      showMessage(this.#el.message, "");
    } catch (error) {
      if (!isAbort(error)) {
        showMessage(this.#el.message, "");
        showError(this.#el.error, error);
      }
    } finally {
      if (this.#controller === controller) {
        this.#controller = null;
        this.#setBusy(false);
      }
    }
  }

  #predictRequest(style) {
    const params = new URLSearchParams({
      max_size: this.#el.maxSize.value,
      strength: this.#el.strength.value,
      preserve_color: String(this.#el.preserveColor.checked),
      format: this.#el.format.value,
    });
    const body = new FormData();
    body.append("image", this.#photo);
    if (style === PAINTING) {
      body.append("style_image", this.#painting);
    } else {
      params.set("style", style);
    }
    return { url: `/model/predict?${params}`, body };
  }

  async #showResult(blob, style, headers) {
    const { result, compare, stageEmpty, download, meta } = this.#el;
    const url = this.#urls.replace("result", blob);
    result.src = url;
    await result.decode();
    compare.style.setProperty("--aspect", `${result.naturalWidth} / ${result.naturalHeight}`);
    compare.dataset.style = style;
    compare.hidden = false;
    stageEmpty.hidden = true;
    const styleSlug = style === PAINTING ? slugify(fileStem(this.#painting.name)) : style;
    download.href = url;
    download.download = `${fileStem(this.#photo.name)}-${styleSlug}.${EXTENSIONS[this.#el.format.value]}`;
    download.hidden = false;
    meta.textContent = resultSummary(this.#catalog.titleOf(style), headers);
  }

  #setBusy(busy, text = "") {
    this.#el.stage.setAttribute("aria-busy", String(busy));
    if (busy) {
      showMessage(this.#el.message, text);
    }
  }

  // ---- named styles ------------------------------------------------------------------------

  async #saveStyle() {
    const { saveForm, styleName, styleTitle, saveButton, message, error } = this.#el;
    if (!this.#painting || !saveForm.reportValidity()) {
      return;
    }
    clearError(error);
    const body = new FormData();
    body.append("image", this.#painting);
    body.append("name", styleName.value.trim());
    body.append("title", styleTitle.value.trim() || styleTitle.placeholder);
    saveButton.disabled = true;
    try {
      const response = await request("/model/styles", { method: "POST", body });
      const style = await response.json();
      await this.#catalog.load(style.name);
      await this.#stylizeIfReady();
      showMessage(message, `Saved “${style.title}” as a style.`, "ok");
    } catch (failure) {
      showError(error, failure);
    } finally {
      saveButton.disabled = false;
    }
  }

  // A style trained in the Train panel: selected, so the next Stylize uses it.
  async #showNewStyle(name) {
    try {
      await this.#catalog.load(name);
    } catch (error) {
      showError(this.#el.error, error);
    }
  }

  async #removeStyle(name, title) {
    if (!window.confirm(`Remove the style “${title}”?`)) {
      return;
    }
    clearError(this.#el.error);
    try {
      await request(`/model/styles/${encodeURIComponent(name)}`, { method: "DELETE" });
      await this.#catalog.load();
      showMessage(this.#el.message, `Removed “${title}”.`, "ok");
    } catch (error) {
      showError(this.#el.error, error);
    }
  }
}

function resultSummary(title, headers) {
  const parts = [title.charAt(0).toUpperCase() + title.slice(1)];
  const size = headers.get("X-Image-Size");
  const ms = Number.parseFloat(headers.get("X-Inference-Ms"));
  if (size) {
    parts.push(size.replace("x", " × ") + " px");
  }
  if (Number.isFinite(ms)) {
    parts.push(`${Math.round(ms)} ms`);
  }
  return parts.join(" · ");
}
