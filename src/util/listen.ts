import { CairnError, ErrorCode } from '../model/errors.js';

/** `HOST:PORT` (`[v6]:PORT`; an empty host is 127.0.0.1), or INVALID_OPTION naming `what`. */
export function parseListen(value: string, what = '--listen'): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535)
    throw new CairnError(ErrorCode.INVALID_OPTION, `${what}: ${JSON.stringify(value)} is not HOST:PORT`);
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}
