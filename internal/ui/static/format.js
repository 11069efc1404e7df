// Formatting of Kubernetes values for people.

const SUFFIXES = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50,
  k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, m: 1e-3, "": 1 };

// quantity parses a resource.Quantity string ("3800m", "15Gi", "4") to a number.
export function quantity(q) {
  if (q === undefined || q === null || q === "") return NaN;
  const m = /^([0-9.]+)(e[0-9]+)?([a-zA-Z]*)$/.exec(String(q));
  if (!m) return NaN;
  const factor = SUFFIXES[m[3]];
  if (factor === undefined) return NaN;
  return parseFloat(m[1] + (m[2] || "")) * factor;
}

export function cpu(q) {
  const v = quantity(q);
  if (isNaN(v)) return "–";
  return Number.isInteger(v) ? String(v) : v.toFixed(v < 10 ? 2 : 1);
}

export function memory(q) {
  const v = quantity(q);
  if (isNaN(v)) return "–";
  return (v / 2 ** 30).toFixed(v < 10 * 2 ** 30 ? 1 : 0) + " GiB";
}

export function age(timestamp, now = Date.now()) {
  if (!timestamp) return "–";
  const s = Math.max(0, Math.floor((now - Date.parse(timestamp)) / 1000));
  if (s < 120) return s + "s";
  if (s < 7200) return Math.floor(s / 60) + "m";
  if (s < 172800) return Math.floor(s / 3600) + "h";
  return Math.floor(s / 86400) + "d";
}
