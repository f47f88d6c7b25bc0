// A live loss curve on a <canvas>: total, content and style losses against steps, on a log
// scale (losses fall by orders of magnitude early and by percents late; a linear axis would
// flatten everything after the first few steps). No chart library: a few lines and ticks.

const SERIES = [
  { key: "total_loss", label: "Total", color: "#1f1c18", width: 2 },
  { key: "content_loss", label: "Content", color: "#2f6b8f", width: 1.5 },
  { key: "style_loss", label: "Style", color: "#9a3b1d", width: 1.5 },
];
const PAD = { top: 30, right: 14, bottom: 30, left: 52 };
const GRID = "#e3dbcf";
const TEXT = "#6a6259";
const FONT = "12px system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif";
const NUMBER = new Intl.NumberFormat("en-US", { maximumSignificantDigits: 2 });

export class LossChart {
  #canvas;
  #points = [];
  #lastStep = 0;
  #totalSteps = 0;

  constructor(canvas) {
    this.#canvas = canvas;
    new ResizeObserver(() => this.draw()).observe(canvas);
    this.draw();
  }

  // A new job: forget the old curve; `totalSteps` fixes the x axis so the curve grows rightwards.
  reset(totalSteps = 0) {
    this.#points = [];
    this.#lastStep = 0;
    this.#totalSteps = totalSteps;
    this.draw();
  }

  // Points from GET /jobs/{id}/history, oldest first; steps already drawn are skipped.
  append(points) {
    const fresh = points.filter((point) => point.step > this.#lastStep);
    if (fresh.length === 0) {
      return;
    }
    this.#points.push(...fresh);
    this.#lastStep = fresh[fresh.length - 1].step;
    this.draw();
  }

  get lastStep() {
    return this.#lastStep;
  }

  draw() {
    const canvas = this.#canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (width === 0 || height === 0) {
      return;
    }
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const context = canvas.getContext("2d");
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    context.clearRect(0, 0, width, height);
    context.font = FONT;
    canvas.dataset.points = String(this.#points.length);
    this.#describe();
    if (this.#points.length === 0) {
      context.fillStyle = TEXT;
      context.textAlign = "center";
      context.fillText("The loss curve appears after the first steps.", width / 2, height / 2);
      return;
    }
    const plot = {
      x: PAD.left,
      y: PAD.top,
      width: Math.max(1, width - PAD.left - PAD.right),
      height: Math.max(1, height - PAD.top - PAD.bottom),
    };
    const xMax = Math.max(this.#totalSteps, this.#lastStep, 2);
    const [low, high] = this.#logRange();
    const x = (step) => plot.x + ((step - 1) / (xMax - 1)) * plot.width;
    const y = (value) =>
      plot.y + plot.height - ((Math.log10(value) - low) / (high - low)) * plot.height;
    this.#drawAxes(context, plot, xMax, low, high, x, y);
    for (const series of SERIES) {
      this.#drawSeries(context, series, x, y, low);
    }
    this.#drawLegend(context, plot);
  }

  #logRange() {
    let low = Infinity;
    let high = -Infinity;
    for (const point of this.#points) {
      for (const { key } of SERIES) {
        if (point[key] > 0) {
          low = Math.min(low, Math.log10(point[key]));
          high = Math.max(high, Math.log10(point[key]));
        }
      }
    }
    if (!Number.isFinite(low)) {
      return [-1, 1];
    }
    // At least a decade tall, with a little air above and below.
    const middle = (low + high) / 2;
    const half = Math.max((high - low) / 2, 0.5) * 1.08;
    return [middle - half, middle + half];
  }

  #drawAxes(context, plot, xMax, low, high, x, y) {
    context.strokeStyle = GRID;
    context.fillStyle = TEXT;
    context.lineWidth = 1;
    context.textAlign = "right";
    context.textBaseline = "middle";
    for (const value of logTicks(low, high)) {
      const top = Math.round(y(value)) + 0.5;
      line(context, plot.x, top, plot.x + plot.width, top);
      context.fillText(NUMBER.format(value), plot.x - 6, top);
    }
    context.textAlign = "center";
    context.textBaseline = "top";
    for (const step of stepTicks(xMax)) {
      const left = Math.round(x(step)) + 0.5;
      line(context, left, plot.y + plot.height, left, plot.y + plot.height + 4);
      context.fillText(String(step), left, plot.y + plot.height + 7);
    }
    context.strokeStyle = TEXT;
    const bottom = plot.y + plot.height + 0.5;
    line(context, plot.x, bottom, plot.x + plot.width, bottom);
    context.textAlign = "left";
    context.textBaseline = "alphabetic";
    context.fillText("loss (log)", 4, 14);
  }

  #drawSeries(context, series, x, y, low) {
    context.strokeStyle = series.color;
    context.lineWidth = series.width;
    context.lineJoin = "round";
    const at = (point) => [x(point.step), y(Math.max(point[series.key], 10 ** low))];
    context.beginPath();
    if (this.#points.length === 1) {
      const [px, py] = at(this.#points[0]);
      context.arc(px, py, 2, 0, 2 * Math.PI);
    }
    this.#points.forEach((point, index) => {
      const [px, py] = at(point);
      if (index === 0) {
        context.moveTo(px, py);
      } else {
        context.lineTo(px, py);
      }
    });
    context.stroke();
  }

  #drawLegend(context, plot) {
    context.textBaseline = "middle";
    context.textAlign = "left";
    let left = plot.x + plot.width;
    const top = 14;
    for (const series of [...SERIES].reverse()) {
      const label = series.label;
      left -= context.measureText(label).width;
      context.fillStyle = TEXT;
      context.fillText(label, left, top);
      left -= 22;
      context.strokeStyle = series.color;
      context.lineWidth = series.width + 0.5;
      line(context, left, top, left + 16, top);
      left -= 14;
    }
  }

  #describe() {
    const last = this.#points[this.#points.length - 1];
    this.#canvas.setAttribute(
      "aria-label",
      last
        ? `Loss curve: total loss ${NUMBER.format(last.total_loss)} at step ${last.step} ` +
            `(content ${NUMBER.format(last.content_loss)}, ` +
            `style ${NUMBER.format(last.style_loss)}).`
        : "Loss curve: no steps yet.",
    );
  }
}

function line(context, x1, y1, x2, y2) {
  context.beginPath();
  context.moveTo(x1, y1);
  context.lineTo(x2, y2);
  context.stroke();
}

// 1, 2 and 5 times powers of ten inside [low, high] (log10 units); only powers when the range
// spans many decades.
function logTicks(low, high) {
  const multipliers = high - low > 3 ? [1] : high - low > 1.2 ? [1, 3] : [1, 2, 5];
  const ticks = [];
  for (let exponent = Math.floor(low); exponent <= Math.ceil(high); exponent += 1) {
    for (const multiplier of multipliers) {
      const value = multiplier * 10 ** exponent;
      const position = Math.log10(value);
      if (position >= low && position <= high) {
        ticks.push(value);
      }
    }
  }
  return ticks;
}

// About five round step numbers from 1 to `max`.
function stepTicks(max) {
  const rough = max / 5;
  const power = 10 ** Math.floor(Math.log10(Math.max(rough, 1)));
  const spacing = [1, 2, 5, 10].map((m) => m * power).find((candidate) => candidate >= rough);
  const ticks = [1];
  for (let step = spacing; step <= max; step += spacing) {
    if (step > 1) {
      ticks.push(step);
    }
  }
  return ticks;
}
