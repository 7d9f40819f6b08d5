/**
 * One fetch per key, however many callers want it at the same time, with a
 * deadline of its own.
 *
 * - Each caller waits with its own AbortSignal: a caller that aborts rejects at
 *   once with ABORTED, and the others keep waiting.
 * - The shared task has its own deadline, started when the task starts: when it
 *   passes, the task's signal aborts and every waiter rejects with the task's
 *   timeout error at once, whether or not the work has noticed yet.
 * - When every waiter has gone, the task is cancelled (its signal aborts).
 * - A task is forgotten the moment it settles (deadline and cancel included), so
 *   a later caller starts a fresh task instead of joining a dying one.
 */
import { CairnError, ErrorCode } from '../model/errors.js';
import { abortedError } from './chunk-source.js';

const noop = (): void => {};

export interface TaskOptions {
  /** Time allowed from the start of the task to its end; omitted, the task has no deadline of its own. */
  deadlineMs?: number;
  /** The error every waiter rejects with when the deadline passes (default: a TIMEOUT error). */
  onTimeout?: () => CairnError;
  /** Called once when the task settles, however it settles (after `forget`). */
  onSettled?: (outcome: { ok: true } | { ok: false; error: unknown; cancelled: boolean }) => void;
}

export class SharedTask<T> {
  /** Settles at the deadline, on cancel, or when the work settles, whichever is first. */
  readonly result: Promise<T>;
  readonly startedAt = performance.now();
  private readonly controller = new AbortController();
  private waiters = 0;
  private settled = false;
  private cancelled = false;

  constructor(work: (signal: AbortSignal) => Promise<T>, opts: TaskOptions, forget: () => void) {
    const signal = this.controller.signal;
    this.result = new Promise<T>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const settle = (ok: boolean, value: unknown): void => {
        if (this.settled) return;
        this.settled = true;
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        forget();
        if (ok) resolve(value as T);
        else reject(value);
        try {
          opts.onSettled?.(ok ? { ok: true } : { ok: false, error: value, cancelled: this.cancelled });
        } catch {
          // An observer's failure is not the task's.
        }
      };
      const onAbort = (): void => settle(false, signal.reason);
      if (opts.deadlineMs !== undefined) {
        const ms = opts.deadlineMs;
        timer = setTimeout(() => {
          this.controller.abort(opts.onTimeout?.() ?? new CairnError(ErrorCode.TIMEOUT, `no result within ${ms} ms`));
        }, ms);
      }
      signal.addEventListener('abort', onAbort, { once: true });
      let running: Promise<T>;
      try {
        running = work(signal);
      } catch (err) {
        running = Promise.reject(err);
      }
      running.then(
        (value) => settle(true, value),
        (err: unknown) => settle(false, err),
      );
    });
    this.result.catch(noop);
  }

  get isSettled(): boolean {
    return this.settled;
  }

  /** Callers waiting now. */
  get waiting(): number {
    return this.waiters;
  }

  /** Ends the task now: waiters reject with `error`, the work's signal aborts. */
  cancel(error: CairnError): void {
    if (this.settled) return;
    this.cancelled = true;
    this.controller.abort(error);
  }

  /**
   * Waits for the task's result; `signal` (the caller's) rejects this wait with
   * ABORTED without affecting other waiters. `what` names the read in errors.
   */
  join(signal: AbortSignal | undefined, what: string): Promise<T> {
    if (signal?.aborted) return Promise.reject(abortedError(what, signal));
    this.waiters++;
    if (!signal) return this.result;
    return new Promise<T>((resolve, reject) => {
      let done = false;
      const onAbort = (): void => {
        if (done) return;
        done = true;
        reject(abortedError(what, signal));
        this.waiters--;
        if (this.waiters === 0) this.cancel(new CairnError(ErrorCode.ABORTED, `${what}: every reader aborted`));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.result.then(
        (value) => {
          if (done) return;
          done = true;
          signal.removeEventListener('abort', onAbort);
          resolve(value);
        },
        (err: unknown) => {
          if (done) return;
          done = true;
          signal.removeEventListener('abort', onAbort);
          reject(err);
        },
      );
    });
  }
}

/** The tasks in flight, by key. */
export class SingleFlight<T> {
  private readonly tasks = new Map<string, SharedTask<T>>();

  get size(): number {
    return this.tasks.size;
  }

  /** True while a task for `key` is in flight. */
  has(key: string): boolean {
    return this.tasks.has(key);
  }

  /** The task in flight for `key`, or a new one running `work` (then `onStart` is called). */
  task(key: string, work: (signal: AbortSignal) => Promise<T>, opts: TaskOptions): SharedTask<T> {
    const existing = this.tasks.get(key);
    if (existing) return existing;
    let created: SharedTask<T> | undefined = undefined;
    const forget = (): void => {
      // Settling can happen inside the constructor (work throwing synchronously
      // settles on a later tick, but stay safe): only delete our own entry.
      if (created !== undefined && this.tasks.get(key) === created) this.tasks.delete(key);
    };
    created = new SharedTask(work, opts, forget);
    if (!created.isSettled) this.tasks.set(key, created);
    return created;
  }

  /** Cancels every task in flight (e.g. on close). */
  cancelAll(error: CairnError): void {
    for (const t of [...this.tasks.values()]) t.cancel(error);
    this.tasks.clear();
  }
}
