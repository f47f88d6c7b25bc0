// Small DOM helpers shared by the two panels: drop zones, messages and object URLs.

// Fired on window when the style catalog changed (a trained style was saved): pickers reload.
export const STYLES_CHANGED = "atelier:styles-changed";

export function byId(id) {
  return document.getElementById(id);
}

// A <label class="dropzone"> around a file input: click or keyboard opens the picker, and files
// dropped on it are handed over the same way.
export function setupDropzone(input, onFiles) {
  const zone = input.closest("[data-dropzone]");
  input.addEventListener("change", () => {
    if (input.files.length > 0) {
      onFiles([...input.files]);
    }
  });
  zone.addEventListener("dragenter", (event) => dragOver(zone, event));
  zone.addEventListener("dragover", (event) => dragOver(zone, event));
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    const files = [...event.dataTransfer.files];
    if (files.length > 0) {
      onFiles(input.multiple ? files : files.slice(0, 1));
    }
  });
}

export function showDroppedFiles(input, files, previewUrl) {
  const zone = input.closest("[data-dropzone]");
  const preview = zone.querySelector(".dropzone-preview");
  const names = files.map((file) => file.name).join(", ");
  zone.querySelector(".dropzone-file").textContent = names;
  zone.classList.add("filled");
  preview.hidden = !previewUrl;
  if (previewUrl) {
    preview.onerror = () => {
      preview.hidden = true;
    };
    preview.src = previewUrl;
  }
}

// Dropping a file anywhere else would make the browser navigate away from the page.
export function preventStrayDrops() {
  for (const type of ["dragover", "drop"]) {
    window.addEventListener(type, (event) => {
      if (!event.target.closest?.("[data-dropzone]")) {
        event.preventDefault();
      }
    });
  }
}

export function showError(element, error) {
  element.textContent = error instanceof Error ? error.message : String(error);
  element.hidden = false;
}

export function clearError(element) {
  element.textContent = "";
  element.hidden = true;
}

export function showMessage(element, text, tone = "") {
  element.textContent = text;
  element.className = tone ? `message ${tone}` : "message";
}

// Remembers one object URL per slot and revokes the previous one when it is replaced.
export class ObjectUrls {
  #urls = new Map();

  replace(slot, blob) {
    this.revoke(slot);
    const url = URL.createObjectURL(blob);
    this.#urls.set(slot, url);
    return url;
  }

  revoke(slot) {
    const url = this.#urls.get(slot);
    if (url) {
      URL.revokeObjectURL(url);
      this.#urls.delete(slot);
    }
  }
}

export function fileStem(name) {
  return name.replace(/\.[^.]+$/, "") || "image";
}

export function slugify(text) {
  return text
    .toLowerCase()
    .normalize("NFKD")
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 64);
}

export function titleCase(slug) {
  return slug
    .split("-")
    .filter(Boolean)
    .map((word) => word.charAt(0).toUpperCase() + word.slice(1))
    .join(" ");
}

function dragOver(zone, event) {
  event.preventDefault();
  event.dataTransfer.dropEffect = "copy";
  zone.classList.add("dragging");
}
