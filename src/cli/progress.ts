/**
 * Progress on the terminal for long work: one line rewritten in place, at most
 * ten times a second. Silent when stderr is not a TTY or output is JSON.
 */
export class Progress {
  private last = 0;
  private readonly started = performance.now();
  private shown = false;

  constructor(private readonly enabled: boolean) {}

  static for(opts: { json?: boolean }): Progress {
    return new Progress(!opts.json && process.stderr.isTTY === true);
  }

  update(render: (elapsedSeconds: number) => string): void {
    if (!this.enabled) return;
    const now = performance.now();
    if (now - this.last < 100) return;
    this.last = now;
    this.shown = true;
    const line = render((now - this.started) / 1000);
    process.stderr.write(`\r\x1b[2K${line.slice(0, (process.stderr.columns || 120) - 1)}`);
  }

  done(): void {
    if (this.enabled && this.shown) process.stderr.write('\r\x1b[2K');
  }
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(u === 0 ? 0 : 1)} ${units[u]}`;
}

export function rate(bytes: number, seconds: number): string {
  return `${(bytes / 1e6 / Math.max(seconds, 1e-6)).toFixed(1)} MB/s`;
}
