/**
 * A duration given in hours, as an operator reads it in alerts, explanations and mitigations:
 * minutes under an hour ("0.0 h" said nothing about a failure 2 minutes away), hours with one
 * decimal up to two days, days after that.
 */
export function formatHours(h: number): string {
  const minutes = Math.round(h * 60);
  if (minutes < 1) return "under 1 min";
  if (minutes < 60) return `${minutes} min`;
  if (h < 48) return `${h.toFixed(1)} h`;
  return `${(h / 24).toFixed(1)} days`;
}

/** A time to failure in a table cell: "-" when none is claimed, "now" when already reached. */
export function formatTimeToFailure(h: number | null): string {
  return h === null ? "-" : h === 0 ? "now" : formatHours(h);
}

/** An estimated duration: "~2 min", "~9.4 h", but "under 1 min" (not "~under 1 min"). */
export function aboutHours(h: number): string {
  const text = formatHours(h);
  return text.startsWith("under") ? text : `~${text}`;
}
