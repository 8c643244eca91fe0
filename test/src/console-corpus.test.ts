// The console parser against the syzkaller Linux crash-report corpus (597 real console logs with
// the expected title in a header; see the corpus README). Asserts that the first failure's title
// equals TITLE or an ALT for at least 94% of the files with a title, and that files without one
// yield no failure; prints the per-TYPE title and class agreement and the frame agreement.
//
// Corpus location: $SHADOWVM_KERNEL_CORPUS, else <project root>/../shared/corpora/
// linux-kernel-reports/reports (the corpus is checked out beside the project). A missing corpus
// fails the test rather than skipping it.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { ParsedFailure } from "@shadowvm/shared/failures/index";
import { CORPUS_TYPE_CLASSES, classMatchesCorpusType, parseConsole } from "@shadowvm/shared/failures/index";
import { test } from "uvu";
import * as assert from "uvu/assert";

const projectRoot = resolve(fileURLToPath(new URL("../..", import.meta.url)));
const corpusDir =
  process.env.SHADOWVM_KERNEL_CORPUS ??
  join(projectRoot, "..", "shared", "corpora", "linux-kernel-reports", "reports");

interface CorpusFile {
  name: string;
  /** Absent: no TITLE line. An empty TITLE line also means "no failure expected". */
  title: string | undefined;
  alts: string[];
  type: string | undefined;
  frame: string | undefined;
  corrupted: boolean;
  log: Buffer;
}

function readCorpus(dir: string): CorpusFile[] {
  const files: CorpusFile[] = [];
  for (const name of readdirSync(dir).sort((a, b) => Number(a) - Number(b) || a.localeCompare(b))) {
    const bytes = readFileSync(join(dir, name));
    // Headers are ASCII; the log after the first blank line stays raw bytes.
    const sep = bytes.indexOf("\n\n");
    const head = bytes.subarray(0, Math.max(sep, 0)).toString("latin1").split("\n");
    const value = (key: string) =>
      head
        .find((l) => l.startsWith(`${key}:`))
        ?.slice(key.length + 1)
        .trim();
    const title = value("TITLE");
    files.push({
      name,
      title: title === "" ? undefined : title,
      alts: head.filter((l) => l.startsWith("ALT:")).map((l) => l.slice(4).trim()),
      type: value("TYPE"),
      frame: value("FRAME"),
      corrupted: value("CORRUPTED") === "Y",
      log: bytes.subarray(sep < 0 ? 0 : sep + 2),
    });
  }
  return files;
}

const pct = (n: number, d: number) => (d === 0 ? "-" : `${((100 * n) / d).toFixed(1)}%`);

test("corpus: first failure title agrees with TITLE/ALT; logs without a title give no failure", () => {
  assert.ok(
    existsSync(corpusDir),
    `kernel report corpus not found at ${corpusDir} (set SHADOWVM_KERNEL_CORPUS)`,
  );
  const files = readCorpus(corpusDir);
  assert.ok(files.length >= 500, `only ${files.length} corpus files in ${corpusDir}`);

  const started = performance.now();
  let withTitle = 0;
  let titleOk = 0;
  let negatives = 0;
  let negativesOk = 0;
  let negativesKernelOk = 0;
  let frameHeader = 0;
  let frameHeaderOk = 0;
  let frameTitle = 0;
  let frameTitleOk = 0;
  let corruptedAgree = 0;
  const perType = new Map<string, { n: number; title: number; cls: number }>();
  const misses: string[] = [];
  const negativeMisses: string[] = [];

  for (const f of files) {
    const found: ParsedFailure[] = parseConsole(f.log);
    const first = found[0];
    if (f.title === undefined) {
      negatives++;
      if (first === undefined) negativesOk++;
      else negativeMisses.push(`${f.name}: ${first.title} (${first.kind}, tier ${first.tier})`);
      if (!found.some((x) => x.tier < 2)) negativesKernelOk++;
      continue;
    }
    withTitle++;
    const ok = first !== undefined && (first.title === f.title || f.alts.includes(first.title));
    if (ok) titleOk++;
    else misses.push(`${f.name}: want "${f.title}" got "${first?.title ?? "(none)"}"`);
    if (first !== undefined && first.corrupted === f.corrupted) corruptedAgree++;
    const type = f.type ?? "(no TYPE)";
    const row = perType.get(type) ?? { n: 0, title: 0, cls: 0 };
    row.n++;
    if (ok) row.title++;
    if (first !== undefined && f.type !== undefined && classMatchesCorpusType(first.class, f.type)) row.cls++;
    perType.set(type, row);
    if (f.frame !== undefined) {
      frameHeader++;
      // FRAME: corrupted means the title names no frame.
      if (first !== undefined && first.frame === (f.frame === "corrupted" ? null : f.frame)) frameHeaderOk++;
    }
    // The frame a title names: the text after the last " in " (syzkaller's convention).
    const at = f.title.lastIndexOf(" in ");
    const titled = at >= 0 ? f.title.slice(at + 4) : "";
    if (/^[A-Za-z_][\w.]*$/.test(titled) && titled !== "corrupted") {
      frameTitle++;
      if (first?.frame === titled) frameTitleOk++;
    }
  }
  const seconds = (performance.now() - started) / 1000;

  const lines = [
    `corpus: ${files.length} files in ${corpusDir} (${seconds.toFixed(2)} s)`,
    `title agreement (first failure = TITLE or ALT): ${titleOk}/${withTitle} = ${pct(titleOk, withTitle)}`,
    `logs without a title giving no failure: ${negativesOk}/${negatives} = ${pct(negativesOk, negatives)}` +
      ` (no kernel report: ${negativesKernelOk}/${negatives})`,
    `frame agreement: FRAME header ${frameHeaderOk}/${frameHeader} = ${pct(frameHeaderOk, frameHeader)},` +
      ` frame named in TITLE ${frameTitleOk}/${frameTitle} = ${pct(frameTitleOk, frameTitle)}`,
    `corrupted flag agreement: ${corruptedAgree}/${withTitle} = ${pct(corruptedAgree, withTitle)}`,
    "",
    "TYPE                                  files  title   class  (our classes)",
  ];
  for (const [type, row] of [...perType].sort((a, b) => b[1].n - a[1].n || a[0].localeCompare(b[0]))) {
    const classes = (CORPUS_TYPE_CLASSES[type] ?? []).join("/");
    lines.push(
      `${type.padEnd(38)}${String(row.n).padStart(5)}  ${pct(row.title, row.n).padStart(6)}  ${
        type === "(no TYPE)" ? "     -" : pct(row.cls, row.n).padStart(6)
      }  ${classes}`,
    );
  }
  if (negativeMisses.length > 0) lines.push("", "failures found in logs without a title:", ...negativeMisses);
  if (process.env.SHADOWVM_CORPUS_VERBOSE) lines.push("", "title misses:", ...misses);
  console.log(lines.join("\n"));

  assert.ok(titleOk / withTitle >= 0.94, `title agreement ${pct(titleOk, withTitle)} < 94%`);
  assert.ok(
    negativesOk / negatives >= 0.95,
    `logs without a title giving no failure: ${pct(negativesOk, negatives)}`,
  );
  assert.ok(negativesKernelOk === negatives, "a log without a title produced a kernel report");
});

test.run();
