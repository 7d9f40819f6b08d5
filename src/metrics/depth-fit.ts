/**
 * A running least-squares fit of lookup latency L (seconds) against layer depth
 * D: L = a·D + b, the model Li et al. (WWW'22, Fig. 13) fitted over overlay
 * layers and that reconstruction's operation cost C_o rests on. O(1) memory;
 * add() is a handful of floating-point operations, cheap enough for every lookup.
 */
export interface DepthFitResult {
  /** Seconds per layer of depth. */
  a: number;
  /** Seconds at depth zero (the intercept). */
  b: number;
  /** Coefficient of determination of the fit (0 when undefined). */
  r2: number;
  /** Samples the fit is over. */
  n: number;
}

export class DepthFit {
  private n = 0;
  private sx = 0;
  private sy = 0;
  private sxx = 0;
  private sxy = 0;
  private syy = 0;
  private minDepth = Infinity;
  private maxDepth = -Infinity;

  add(depth: number, seconds: number): void {
    if (!Number.isFinite(depth) || !Number.isFinite(seconds)) return;
    if (depth < this.minDepth) this.minDepth = depth;
    if (depth > this.maxDepth) this.maxDepth = depth;
    this.n++;
    this.sx += depth;
    this.sy += seconds;
    this.sxx += depth * depth;
    this.sxy += depth * seconds;
    this.syy += seconds * seconds;
  }

  /** Folds another fit's samples into this one (per-mount fits into the daemon's). */
  merge(other: DepthFit): void {
    this.n += other.n;
    this.sx += other.sx;
    this.sy += other.sy;
    this.sxx += other.sxx;
    this.sxy += other.sxy;
    this.syy += other.syy;
    this.minDepth = Math.min(this.minDepth, other.minDepth);
    this.maxDepth = Math.max(this.maxDepth, other.maxDepth);
  }

  /** The smallest and largest depth sampled; undefined before the first sample. */
  depthRange(): { min: number; max: number } | undefined {
    return this.n === 0 ? undefined : { min: this.minDepth, max: this.maxDepth };
  }

  result(): DepthFitResult {
    const { n } = this;
    if (n === 0) return { a: 0, b: 0, r2: 0, n };
    const vx = this.sxx - (this.sx * this.sx) / n;
    const vy = this.syy - (this.sy * this.sy) / n;
    const cxy = this.sxy - (this.sx * this.sy) / n;
    // All samples at one depth: no slope can be fitted; the intercept is the mean.
    if (vx <= 0) return { a: 0, b: this.sy / n, r2: 0, n };
    const a = cxy / vx;
    const b = (this.sy - a * this.sx) / n;
    const r2 = vy > 0 ? Math.min(1, Math.max(0, (cxy * cxy) / (vx * vy))) : 0;
    return { a, b, r2, n };
  }
}
