// Space-filling designs. The initial design uses the R_d low-discrepancy sequence (Roberts 2018:
// x_i = frac(shift + i * alpha), alpha_j = phi_d^-j with phi_d the root of x^(d+1) = x + 1) with
// a seeded random shift. Unlike a Latin hypercube its every prefix is evenly spread, so the design
// needs no stored plan: point i is a function of (seed, i) and a resumed campaign picks up at i.
import { Rng } from "./rng.js";

export function rdPoint(index: number, dim: number, shift: readonly number[]): number[] {
  let phi = 2;
  for (let i = 0; i < 40; i++) phi = (1 + phi) ** (1 / (dim + 1));
  const out: number[] = [];
  for (let j = 0; j < dim; j++) {
    const alpha = (1 / phi) ** (j + 1);
    const v = (shift[j] ?? 0) + (index + 1) * alpha;
    out.push(v - Math.floor(v));
  }
  return out;
}

export function designShift(seed: number | string, dim: number): number[] {
  const rng = new Rng(`design:${seed}`);
  return Array.from({ length: dim }, () => rng.random());
}
