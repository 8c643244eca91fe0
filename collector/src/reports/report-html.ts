// The report as one self-contained HTML file: inline CSS and inline SVG charts, no scripts or
// assets from anywhere (it opens offline, from a mail attachment or a file:// URL). The only script
// is a few lines that count each chart's drawn marks into data-drawn (what the Chromium test reads).
import type { ReportData } from "./report-service.js";

const esc = (s: unknown): string =>
  String(s ?? "").replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c] ?? c,
  );
const fmt = (n: number | null | undefined, digits = 2): string =>
  n === null || n === undefined ? "–" : n.toFixed(digits);
const iso = (ms: number | null | undefined): string =>
  ms ? new Date(ms).toISOString().replace(".000", "") : "–";
const COLORS = ["#d62728", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

const W = 640;
const H = 260;
const M = { l: 48, r: 16, t: 16, b: 36 };

function axes(
  xLabel: string,
  yLabel: string,
  xTicks: [number, string][],
  yTicks: [number, string][],
): string {
  const out: string[] = [
    `<line class="axis" x1="${M.l}" y1="${H - M.b}" x2="${W - M.r}" y2="${H - M.b}"/>`,
    `<line class="axis" x1="${M.l}" y1="${M.t}" x2="${M.l}" y2="${H - M.b}"/>`,
    `<text class="label" x="${(W + M.l) / 2}" y="${H - 4}" text-anchor="middle">${esc(xLabel)}</text>`,
    `<text class="label" x="12" y="${(H - M.b + M.t) / 2}" transform="rotate(-90 12 ${(H - M.b + M.t) / 2})" text-anchor="middle">${esc(yLabel)}</text>`,
  ];
  for (const [x, t] of xTicks)
    out.push(
      `<text class="tick" x="${x.toFixed(1)}" y="${H - M.b + 14}" text-anchor="middle">${esc(t)}</text>`,
    );
  for (const [y, t] of yTicks)
    out.push(
      `<text class="tick" x="${M.l - 6}" y="${(y + 4).toFixed(1)}" text-anchor="end">${esc(t)}</text>`,
      `<line class="grid" x1="${M.l}" y1="${y.toFixed(1)}" x2="${W - M.r}" y2="${y.toFixed(1)}"/>`,
    );
  return out.join("");
}

function empty(id: string, title: string, why: string): string {
  return `<figure id="${id}" class="chart" data-marks="0"><figcaption>${esc(title)}</figcaption><p class="none">${esc(why)}</p></figure>`;
}

/** Risk score over time, one line per at-risk VM. */
function riskChart(data: ReportData): string {
  const series = data.at_risk.filter((v) => v.risk_history.length > 0);
  const points = series.flatMap((s) => s.risk_history);
  if (points.length === 0) return empty("chart-risk", "Risk over time", "No risk assessments yet.");
  let t0 = Math.min(...points.map((p) => p.t));
  let t1 = Math.max(...points.map((p) => p.t));
  if (t1 === t0) {
    t0 -= 3_600_000;
    t1 += 3_600_000;
  }
  const x = (t: number) => M.l + ((t - t0) / (t1 - t0)) * (W - M.l - M.r);
  const y = (s: number) => H - M.b - Math.max(0, Math.min(1, s)) * (H - M.t - M.b);
  const marks = series.map((s, i) => {
    const c = COLORS[i % COLORS.length];
    const pts = [...s.risk_history].sort((a, b) => a.t - b.t);
    const d = pts.map((p, k) => `${k ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.score).toFixed(1)}`).join("");
    const dots = pts
      .map(
        (p) =>
          `<circle class="mark" cx="${x(p.t).toFixed(1)}" cy="${y(p.score).toFixed(1)}" r="3" fill="${c}"><title>${esc(s.vm_name)} ${fmt(p.score)} at ${iso(p.t)}</title></circle>`,
      )
      .join("");
    return `<path class="mark line" d="${d}" stroke="${c}" fill="none" stroke-width="2"/>${dots}`;
  });
  const legend = series
    .map((s, i) => `<span><i style="background:${COLORS[i % COLORS.length]}"></i>${esc(s.vm_name)}</span>`)
    .join("");
  const xt: [number, string][] = [0, 0.5, 1].map((f) => [
    x(t0 + f * (t1 - t0)),
    // minutes when the span is long enough, seconds when it is not
    new Date(t0 + f * (t1 - t0))
      .toISOString()
      .slice(t1 - t0 >= 3 * 3_600_000 ? 5 : 11, t1 - t0 >= 600_000 ? 16 : 19)
      .replace("T", " "),
  ]);
  const yt: [number, string][] = [0, 0.25, 0.5, 0.75, 1].map((s) => [y(s), s.toFixed(2)]);
  const thr = y(data.at_risk_threshold);
  return `<figure id="chart-risk" class="chart"><figcaption>Risk over time</figcaption>
<svg viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="risk over time">${axes("time (UTC)", "risk score", xt, yt)}
<line class="threshold" x1="${M.l}" y1="${thr.toFixed(1)}" x2="${W - M.r}" y2="${thr.toFixed(1)}"/>${marks.join("")}</svg>
<div class="legend">${legend}</div></figure>`;
}

const num = (v: unknown): number => (typeof v === "number" && Number.isFinite(v) ? v : 0);

/** Shadow runs by stress (CPU load vs memory load), failed runs red: where the boundary lies. */
function boundaryChart(data: ReportData): string {
  const runs = data.at_risk.flatMap((v) => v.boundary_points.map((p) => ({ ...p, vm: v.vm_name })));
  if (runs.length === 0)
    return empty("chart-boundary", "Failure boundaries", "No finished shadow runs of at-risk VMs.");
  const x = (v: number) => M.l + Math.max(0, Math.min(1, v)) * (W - M.l - M.r);
  const y = (v: number) => H - M.b - Math.max(0, Math.min(1, v)) * (H - M.t - M.b);
  const marks = runs.map((r) => {
    const cx = x(num(r.profile?.["cpu_load"]));
    const cy = y(num(r.profile?.["memory_load"]));
    const failed = r.outcome === "failed";
    const title = `<title>${esc(r.vm)} ${esc(r.id)}: ${esc(r.outcome)}, cpu ${fmt(num(r.profile?.["cpu_load"]))}, memory ${fmt(num(r.profile?.["memory_load"]))}, io ${fmt(num(r.profile?.["io_load"]))}</title>`;
    return failed
      ? `<path class="mark failed" d="M${(cx - 4).toFixed(1)},${(cy - 4).toFixed(1)}l8,8m0,-8l-8,8" stroke="#d62728" stroke-width="2">${title}</path>`
      : `<circle class="mark ok" cx="${cx.toFixed(1)}" cy="${cy.toFixed(1)}" r="4" fill="none" stroke="#2ca02c" stroke-width="1.5">${title}</circle>`;
  });
  // The boundaries the risk engine estimated on these two axes, as dashed lines.
  const lines: string[] = [];
  for (const v of data.at_risk) {
    for (const b of Array.isArray(v.boundary) ? (v.boundary as Record<string, unknown>[]) : []) {
      const at = num(b["boundary"]);
      const label = `${esc(v.vm_name)}: ${esc(b["dimension"])} boundary ${fmt(at)}`;
      if (b["dimension"] === "cpu_load")
        lines.push(
          `<line class="boundary" x1="${x(at).toFixed(1)}" y1="${M.t}" x2="${x(at).toFixed(1)}" y2="${H - M.b}"><title>${label}</title></line>`,
        );
      else if (b["dimension"] === "memory_load")
        lines.push(
          `<line class="boundary" x1="${M.l}" y1="${y(at).toFixed(1)}" x2="${W - M.r}" y2="${y(at).toFixed(1)}"><title>${label}</title></line>`,
        );
    }
  }
  const ticks: [number, string][] = [0, 0.25, 0.5, 0.75, 1].map((v) => [x(v), v.toFixed(2)]);
  const yt: [number, string][] = [0, 0.25, 0.5, 0.75, 1].map((v) => [y(v), v.toFixed(2)]);
  return `<figure id="chart-boundary" class="chart"><figcaption>Failure boundaries (shadow runs by stress; ✕ failed, ○ passed; dashed: estimated boundary)</figcaption>
<svg viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="failure boundaries">${axes("CPU load", "memory load", ticks, yt)}${lines.join("")}${marks.join("")}</svg></figure>`;
}

/** Failures per signature, the most frequent first. */
function signatureChart(data: ReportData): string {
  const sigs = data.signatures.slice(0, 12);
  if (sigs.length === 0)
    return empty("chart-signatures", "Signature frequency", "No failure signatures yet.");
  const rowH = 22;
  const h = M.t + sigs.length * rowH + 8;
  const left = 260;
  const max = Math.max(1, ...sigs.map((s) => s.count));
  const bars = sigs.map((s, i) => {
    const w = Math.max(2, (s.count / max) * (W - left - 60));
    const yy = M.t + i * rowH;
    const label = s.title.length > 40 ? `${s.title.slice(0, 39)}…` : s.title;
    return `<text class="tick" x="${left - 6}" y="${yy + 14}" text-anchor="end">${esc(label)}</text>
<rect class="mark" x="${left}" y="${yy + 3}" width="${w.toFixed(1)}" height="${rowH - 6}" fill="#1f77b4"><title>${esc(s.title)} (${esc(s.fingerprint)}): ${s.count}</title></rect>
<text class="tick" x="${(left + w + 4).toFixed(1)}" y="${yy + 14}">${s.count}</text>`;
  });
  return `<figure id="chart-signatures" class="chart"><figcaption>Signature frequency (failures per signature)</figcaption>
<svg viewBox="0 0 ${W} ${h}" width="${W}" height="${h}" role="img" aria-label="signature frequency">${bars.join("")}</svg></figure>`;
}

function boundaries(v: unknown): string {
  if (!Array.isArray(v) || v.length === 0) return list(v);
  return `<ul>${(v as Record<string, unknown>[])
    .map(
      (b) =>
        `<li>${esc(b["dimension"])}: fails from ${fmt(b["boundary"] as number)} ± ${fmt(b["boundary_uncertainty"] as number)}; now ${fmt(b["level"] as number | null)}, forecast ${fmt(b["forecast"] as number | null)} in ${esc(b["horizon_h"])} h <small>(${esc(b["fingerprint"])})</small></li>`,
    )
    .join("")}</ul>`;
}

function mitigations(v: unknown): string {
  if (!Array.isArray(v) || v.length === 0) return list(v);
  return `<ul>${(v as unknown[])
    .map((m) => {
      if (m && typeof m === "object" && "action" in m) {
        const o = m as Record<string, unknown>;
        return `<li><b>${esc(o["action"])}</b>${o["because"] ? ` (${esc(o["because"])})` : ""}</li>`;
      }
      return `<li>${esc(typeof m === "object" ? JSON.stringify(m) : m)}</li>`;
    })
    .join("")}</ul>`;
}

function list(v: unknown): string {
  if (v === null || v === undefined) return "–";
  if (Array.isArray(v)) {
    if (v.length === 0) return "–";
    return `<ul>${v.map((x) => `<li>${typeof x === "object" ? esc(JSON.stringify(x)) : esc(x)}</li>`).join("")}</ul>`;
  }
  if (typeof v === "object") return `<pre>${esc(JSON.stringify(v, null, 2))}</pre>`;
  return esc(v);
}

export function renderReportHtml(data: ReportData): string {
  const ranking = data.ranking
    .slice(0, 100)
    .map(
      (r) =>
        `<tr><td>${r.rank}</td><td>${esc(r.vm_name)}</td><td>${esc(r.hostname ?? r.agent_id)}</td><td>${fmt(r.score)}</td><td>${fmt(r.confidence)}</td><td>${esc(r.level ?? "–")}</td><td>${r.failures}</td></tr>`,
    )
    .join("");
  const atRisk = data.at_risk
    .map(
      (
        v,
      ) => `<section class="vm"><h3>${esc(v.vm_name)} <small>${esc(v.vm_uuid)} on ${esc(v.hostname ?? v.agent_id)}</small></h3>
<p>Risk <b>${fmt(v.score)}</b>, confidence <b>${fmt(v.confidence)}</b>${v.level ? `, ${esc(v.level)}` : ""} (assessed ${iso(v.assessed_at_ms)})</p>
<dl><dt>Signatures</dt><dd>${list(v.signatures.map((s) => `${s.title} ×${s.failures} (${s.fingerprint})`))}</dd>
<dt>Boundary</dt><dd>${boundaries(v.boundary)}</dd><dt>Mitigations</dt><dd>${mitigations(v.mitigations)}</dd>
<dt>Explanation</dt><dd>${list(v.explanation)}</dd></dl></section>`,
    )
    .join("");
  const c = data.changes;
  const titles = new Map(data.signatures.map((s) => [s.fingerprint, s.title]));
  const signatureName = (fp: string) => (titles.has(fp) ? `${titles.get(fp)} (${fp})` : fp);
  const changes = c.previous_report_id
    ? `<ul><li>Since report ${esc(c.previous_report_id)} (${iso(c.previous_generated_at_ms)})</li>
<li>Newly at risk: ${esc(c.new_at_risk.join(", ") || "none")}</li>
<li>No longer at risk: ${esc(c.no_longer_at_risk.join(", ") || "none")}</li>
<li>Score changes: ${esc(c.score_changes.map((s) => `${s.vm_name} ${fmt(s.from)} → ${fmt(s.to)}`).join(", ") || "none")}</li>
<li>New signatures: ${esc(c.new_signatures.map(signatureName).join(", ") || "none")}</li></ul>`
    : "<p>First report: nothing to compare with.</p>";
  const f = data.fleet;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>shadowvm risk report ${esc(data.id)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:980px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
.chart{margin:16px 0}figcaption{font-weight:600;margin-bottom:4px}
svg{background:#fff;border:1px solid #eee}.axis{stroke:#444}.grid{stroke:#eee}
.tick{font-size:10px;fill:#555}.label{font-size:11px;fill:#333}.threshold{stroke:#d62728;stroke-dasharray:4 3}
.boundary{stroke:#9467bd;stroke-width:1.5;stroke-dasharray:6 4}
.legend span{margin-right:12px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
.none{color:#888}dl{display:grid;grid-template-columns:110px 1fr}dt{font-weight:600}
pre{white-space:pre-wrap;margin:0}ul{margin:0;padding-left:18px}
</style></head><body>
<h1>shadowvm risk report</h1>
<p>Report <b>${esc(data.id)}</b>, generated ${iso(data.generated_at_ms)} (${esc(data.trigger)}). Fleet: ${f.hosts} hosts, ${f.vms} VMs (${f.assessed_vms} assessed, ${f.at_risk_vms} at risk ≥ ${fmt(data.at_risk_threshold)}), ${f.shadow_runs} shadow runs, ${f.failures} failures, ${f.signatures} signatures.</p>
<h2>What changed</h2>${changes}
<h2>Charts</h2>${riskChart(data)}${boundaryChart(data)}${signatureChart(data)}
<h2>Risk ranking</h2>
<table><thead><tr><th>#</th><th>VM</th><th>host</th><th>risk</th><th>confidence</th><th>level</th><th>failures</th></tr></thead><tbody>${ranking}</tbody></table>
<h2>VMs at risk</h2>${atRisk || "<p>No VM at or above the threshold.</p>"}
<script>
for (const f of document.querySelectorAll("figure.chart")) {
  let n = 0;
  for (const m of f.querySelectorAll(".mark")) { const b = m.getBBox(); if (b.width > 0 || b.height > 0) n++; }
  f.setAttribute("data-drawn", String(n));
}
</script>
</body></html>
`;
}
