#!/usr/bin/env node
// Thin launcher: the CLI is compiled to dist/ by `npm run build`.
// fsync and file I/O run on libuv's thread pool; 4 threads (the default) leave an import's writes queued.
process.env.UV_THREADPOOL_SIZE ??= '16';
import('../dist/cli/main.js')
  .then((m) => m.main(process.argv))
  .catch((err) => {
    process.stderr.write(`cairn: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  });
