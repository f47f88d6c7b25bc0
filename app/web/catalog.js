// The style picker: one radio tile per catalog style (thumbnail and title), plus a tile for a
// painting the user dropped in when the server can stylize with arbitrary paintings.

import { apiKey, getJson, request } from "./api.js";

export const PAINTING = "@painting";

const THUMBNAIL_CONCURRENCY = 3;
const THUMBNAIL_RETRIES = 4;
const THUMBNAIL_RETRY_MS = 1500;

export class Catalog {
  #grid;
  #template;
  #canDelete;
  #onRemove;
  #styles = [];
  #paintingUrl = null;
  #thumbnails = new ThumbnailLoader();

  constructor(grid, { canDelete, onSelect, onRemove }) {
    this.#grid = grid;
    this.#template = document.getElementById("style-tile");
    this.#canDelete = canDelete;
    this.#onRemove = onRemove;
    grid.addEventListener("change", () => onSelect(this.selected()));
  }

  // `selected` defaults to the current choice, read once the catalog has arrived: a painting
  // dropped in meanwhile stays selected.
  async load(selected = null) {
    let catalog;
    try {
      catalog = await getJson("/model/styles");
    } catch (error) {
      if (this.#styles.length === 0) {
        this.#showPlaceholder("The style catalog could not be loaded.");
      }
      throw error;
    }
    this.#styles = catalog.styles;
    this.#render(selected ?? this.selected() ?? catalog.default);
  }

  selected() {
    return this.#grid.querySelector("input[name=style]:checked")?.value ?? null;
  }

  titleOf(name) {
    if (name === PAINTING) {
      return "your painting";
    }
    return this.#styles.find((style) => style.name === name)?.title ?? name;
  }

  usePainting(url) {
    this.#paintingUrl = url;
    this.#render(PAINTING);
  }

  #render(selected) {
    const tiles = this.#styles.map((style) =>
      this.#tile({
        value: style.name,
        title: style.title,
        description: style.description,
        thumbnail: style.thumbnail_url,
        removable: this.#canDelete && style.origin === "user",
      }),
    );
    if (this.#paintingUrl) {
      tiles.unshift(
        this.#tile({
          value: PAINTING,
          title: "Your painting",
          description: "The painting you dropped in",
          thumbnail: this.#paintingUrl,
          removable: false,
        }),
      );
    }
    this.#grid.replaceChildren(...tiles);
    for (const image of this.#grid.querySelectorAll("img[data-src]")) {
      this.#thumbnails.load(image, image.dataset.src);
    }
    this.#grid.setAttribute("aria-busy", "false");
    this.#check(selected);
  }

  #showPlaceholder(text) {
    const placeholder = document.createElement("p");
    placeholder.className = "muted";
    placeholder.textContent = text;
    this.#grid.replaceChildren(placeholder);
    this.#grid.setAttribute("aria-busy", "false");
  }

  #check(name) {
    const inputs = [...this.#grid.querySelectorAll("input[name=style]")];
    const input = inputs.find((candidate) => candidate.value === name) ?? inputs[0];
    if (input) {
      input.checked = true;
      this.#scrollTo(input.closest(".style-tile"));
    }
  }

  // Scrolls the grid (never the page) so the selected tile is in view.
  #scrollTo(tile) {
    const grid = this.#grid;
    const top = tile.offsetTop;
    const bottom = top + tile.offsetHeight;
    if (top < grid.scrollTop || bottom > grid.scrollTop + grid.clientHeight) {
      grid.scrollTop = top - (grid.clientHeight - tile.offsetHeight) / 2;
    }
  }

  #tile({ value, title, description, thumbnail, removable }) {
    const tile = this.#template.content.firstElementChild.cloneNode(true);
    const input = tile.querySelector("input");
    input.value = value;
    tile.dataset.style = value;
    tile.querySelector("label").title = description;
    tile.querySelector(".style-name").textContent = title;
    tile.querySelector("img").dataset.src = thumbnail;
    if (removable) {
      tile.append(this.#removeButton(value, title));
    }
    return tile;
  }

  #removeButton(name, title) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "style-remove";
    button.textContent = "×";
    button.setAttribute("aria-label", `Remove the style ${title}`);
    button.addEventListener("click", () => this.#onRemove(name, title));
    return button;
  }
}

// A thumbnail is rendered by the server the first time it is asked for, on the same queue as
// predictions: load a few at a time so a photo's stylization never waits behind all of them,
// and try again later when a busy server answers 503.
class ThumbnailLoader {
  #waiting = [];
  #active = 0;

  load(image, url) {
    this.#enqueue({ image, url, attempt: 0 });
  }

  #enqueue(item) {
    this.#waiting.push(item);
    this.#next();
  }

  #next() {
    while (this.#active < THUMBNAIL_CONCURRENCY && this.#waiting.length > 0) {
      const item = this.#waiting.shift();
      if (item.image.isConnected) {
        this.#start(item);
      }
    }
  }

  #start(item) {
    this.#active += 1;
    const settle = (loaded) => {
      this.#active -= 1;
      if (!loaded && item.attempt < THUMBNAIL_RETRIES) {
        item.attempt += 1;
        setTimeout(() => this.#enqueue(item), THUMBNAIL_RETRY_MS * item.attempt);
      }
      this.#next();
    };
    item.image.onload = () => {
      item.image.classList.add("loaded");
      settle(true);
    };
    item.image.onerror = () => settle(false);
    const url = withAttempt(item.url, item.attempt);
    if (apiKey() && !url.startsWith("blob:")) {
      // A user style's thumbnail is private to its key, which an <img> cannot send.
      request(url, {}, 0)
        .then((response) => response.blob())
        .then((blob) => {
          const objectUrl = URL.createObjectURL(blob);
          item.image.addEventListener("load", () => URL.revokeObjectURL(objectUrl), { once: true });
          item.image.src = objectUrl;
        })
        .catch(() => settle(false));
      return;
    }
    item.image.src = url;
  }
}

function withAttempt(url, attempt) {
  if (attempt === 0 || url.startsWith("blob:")) {
    return url;
  }
  return `${url}${url.includes("?") ? "&" : "?"}attempt=${attempt}`;
}
