/**
 * Entry point of a daemon started by `cairn mount` (not a CLI command: it skips
 * commander and the CLI's modules). The CLI has validated the options; it sends
 * them with its mount request as one JSON line on fd 3, a socket pair, and gets
 * the mount's answer back on it. The mount starts as soon as the modules are
 * loaded, with no polling of the control socket.
 */
import { Socket } from 'node:net';
import { resolve } from 'node:path';
import { buildContentStack, type ContentStackOptions } from './content-stack.js';
import { answerOf, type ControlAnswer, type ControlRequest } from './control.js';
import { CairnError, ErrorCode } from '../model/errors.js';
import { runDaemon } from './daemon.js';
import { createLogger, isLogLevel } from '../util/log.js';

/** What `cairn mount` sends on fd 3. */
export interface Handoff {
  stateDir: string;
  content: ContentStackOptions;
  logLevel: string;
  request: ControlRequest;
  /** `--metrics HOST:PORT`, parsed by the CLI. */
  metrics?: { host: string; port: number };
}

/** The fd the handoff travels on (stdio entry 3 of the spawn). */
export const HANDOFF_FD = 3;

function readLine(sock: Socket): Promise<string> {
  return new Promise((done, fail) => {
    let buf = '';
    sock.setEncoding('utf8');
    const onData = (c: string): void => {
      buf += c;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      sock.off('data', onData);
      sock.pause();
      done(buf.slice(0, nl));
    };
    sock.on('data', onData);
    sock.once('end', () => fail(new Error('fd 3 closed before the handoff line')));
    sock.once('error', fail);
  });
}

async function main(): Promise<void> {
  const pipe = new Socket({ fd: HANDOFF_FD, readable: true, writable: true });
  const h = JSON.parse(await readLine(pipe)) as Handoff;
  // A CLI gone before the answer is no failure of the daemon.
  pipe.on('error', () => undefined);
  let answered = false;
  const answer = (a: ControlAnswer): void => {
    answered = true;
    // The CLI exits once it has the answer; the pipe must not keep this process busy.
    pipe.end(`${JSON.stringify(a)}\n`);
    pipe.unref();
  };
  try {
    if (!isLogLevel(h.logLevel)) throw new Error(`handoff: log level ${JSON.stringify(h.logLevel)}`);
    const log = createLogger({ level: h.logLevel, component: 'daemon' });
    const content = await buildContentStack(h.content, log);
    await runDaemon(content, {
      stateDir: resolve(h.stateDir),
      readDeadlineMs: h.content.readDeadlineMs,
      log,
      exitWhenIdle: true,
      first: { request: h.request, answer },
      ...(h.metrics ? { metrics: h.metrics } : {}),
    });
  } catch (err) {
    // Failed before serving (a --metrics address in use...): the CLI waiting on fd 3 gets the reason.
    if (!answered) {
      const why = err instanceof Error ? err.message : String(err);
      answer(
        await answerOf(Promise.reject(new CairnError(ErrorCode.UNAVAILABLE, `the daemon exited at start: ${why}`))),
      );
    }
    throw err;
  }
}

main().then(
  // Stopped: a FUSE mount someone else detached keeps fuse-native's session thread (and so
  // the process) alive, since its unmount failed; nothing is served any more, so end here.
  () => process.exit(process.exitCode ?? 0),
  (err: unknown) => {
    process.stderr.write(`cairn daemon: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
