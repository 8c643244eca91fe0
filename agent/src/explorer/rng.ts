// Seeded PRNG: xoshiro128** (Blackman & Vigna), seeded through splitmix32. Small, fast, well
// studied, and its 128-bit state fits in JSON so an explorer can persist and resume its stream.

/** Anything with `random()` in [0, 1), like Math; the baseline generator only needs this. */
export interface RandomSource {
  random(): number;
}

function splitmix32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

/** FNV-1a, so string seeds ("vm-42") work too. */
function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

const rotl = (x: number, k: number) => ((x << k) | (x >>> (32 - k))) >>> 0;

export class Rng implements RandomSource {
  private s: Uint32Array;

  constructor(seed: number | string = 1) {
    const mix = splitmix32(typeof seed === "string" ? hashString(seed) : Math.floor(seed) >>> 0);
    this.s = new Uint32Array([mix(), mix(), mix(), mix()]);
    // An all-zero state would be a fixed point.
    if (this.s.every((v) => v === 0)) this.s[0] = 1;
  }

  static fromState(state: readonly number[]): Rng {
    const r = new Rng(0);
    if (state.length !== 4) throw new Error("rng state must have 4 words");
    r.s = new Uint32Array(state.map((v) => v >>> 0));
    return r;
  }

  state(): number[] {
    return Array.from(this.s);
  }

  /** Next 32-bit output. */
  nextU32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1]!, 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1]! << 9) >>> 0;
    s[2]! ^= s[0]!;
    s[3]! ^= s[1]!;
    s[1]! ^= s[2]!;
    s[0]! ^= s[3]!;
    s[2]! ^= t;
    s[3] = rotl(s[3]!, 11);
    return result;
  }

  /** Uniform in [0, 1) with 32 bits of resolution. */
  random(): number {
    return this.nextU32() / 4294967296;
  }

  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.random();
  }

  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.random() * n);
  }

  /** k distinct integers of [0, n), in random order (partial Fisher-Yates). */
  sample(n: number, k: number): number[] {
    const pool = Array.from({ length: n }, (_, i) => i);
    const m = Math.min(k, n);
    for (let i = 0; i < m; i++) {
      const r = i + this.int(n - i);
      [pool[i], pool[r]] = [pool[r]!, pool[i]!];
    }
    return pool.slice(0, m);
  }

  /** Standard normal (Box-Muller). */
  normal(): number {
    const u = 1 - this.random();
    const v = this.random();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  /** Gamma(shape, 1) via Marsaglia-Tsang; used for Beta draws in Thompson sampling. */
  gamma(shape: number): number {
    if (shape < 1) return this.gamma(shape + 1) * this.random() ** (1 / shape);
    const d = shape - 1 / 3;
    const c = 1 / Math.sqrt(9 * d);
    for (;;) {
      let x: number;
      let v: number;
      do {
        x = this.normal();
        v = 1 + c * x;
      } while (v <= 0);
      v = v * v * v;
      const u = this.random();
      if (u < 1 - 0.0331 * x ** 4 || Math.log(u) < 0.5 * x * x + d * (1 - v + Math.log(v))) return d * v;
    }
  }

  beta(a: number, b: number): number {
    const x = this.gamma(a);
    const y = this.gamma(b);
    return x / (x + y);
  }
}
