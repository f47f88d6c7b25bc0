// Numbers and durations as the job panels show them.

const NUMBER = new Intl.NumberFormat("en-US", { maximumSignificantDigits: 3 });

export function formatNumber(value) {
  if (value === null || value === undefined) {
    return "–";
  }
  const magnitude = Math.abs(value);
  if (magnitude !== 0 && (magnitude < 1e-3 || magnitude >= 1e7)) {
    return value.toExponential(2);
  }
  return NUMBER.format(value);
}

export function formatEta(seconds) {
  if (seconds === null || seconds === undefined) {
    return "–";
  }
  return seconds < 1 ? "under 1 s" : formatDuration(seconds);
}

export function formatDuration(seconds) {
  const rounded = Math.round(seconds);
  if (rounded < 60) {
    return `${Math.max(rounded, 1)} s`;
  }
  const minutes = Math.floor(rounded / 60);
  if (minutes >= 60) {
    return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
  }
  return `${minutes} min ${rounded % 60} s`;
}
