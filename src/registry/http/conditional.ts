/**
 * Whether an `If-None-Match` header matches a strong ETag (RFC 9110 §13.1.2:
 * a list of tags, weak comparison, `*` matches any current representation).
 */
export function ifNoneMatchHits(header: string | string[] | undefined, etag: string): boolean {
  if (header === undefined) return false;
  const value = Array.isArray(header) ? header.join(',') : header;
  if (value.trim() === '*') return true;
  const opaque = etag.replace(/^W\//, '');
  return value.split(',').some((t) => t.trim().replace(/^W\//, '') === opaque);
}

/** Whether a client's `Accept-Encoding` allows `coding` (a q-value of 0 refuses it). */
export function acceptsEncoding(header: string | undefined, coding: string): boolean {
  if (!header) return false;
  let wildcard: boolean | undefined;
  for (const part of header.split(',')) {
    const [name = '', ...params] = part.trim().toLowerCase().split(';');
    const q = params.map((p) => /^\s*q\s*=\s*([0-9.]+)\s*$/.exec(p)).find((m) => m)?.[1];
    const ok = q === undefined || Number(q) > 0;
    if (name.trim() === coding) return ok;
    if (name.trim() === '*') wildcard = ok;
  }
  return wildcard ?? false;
}
