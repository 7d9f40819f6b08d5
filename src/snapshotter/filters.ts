/**
 * containerd's filter syntax, as List (Walk) receives it, over snapshot infos:
 *   filter   = selector ("," selector)*      (all must hold)
 *   selector = fieldpath [op value]          (no op: the field is present and non-empty)
 *   op       = "==" | "!=" | "~="            (~= is a regular expression match)
 * Field paths: name, parent, kind, labels.KEY; a path component or a value may be
 * double-quoted (labels."containerd.io/snapshot.ref"). A request's filters are
 * alternatives: a snapshot matches when any one of them does.
 */
import { CairnError, ErrorCode } from '../model/errors.js';
import type { SnapshotRecord } from './metadata.js';

type Op = '==' | '!=' | '~=';

interface Selector {
  path: string[];
  op?: Op;
  value?: string;
  regex?: RegExp;
}

export type SnapshotFilter = (rec: SnapshotRecord) => boolean;

class Scanner {
  pos = 0;
  constructor(
    readonly text: string,
    private readonly whole: string,
  ) {}

  fail(problem: string): never {
    throw new CairnError(
      ErrorCode.INVALID_INPUT,
      `filter ${JSON.stringify(this.whole)}: ${problem} at offset ${this.pos}`,
    );
  }

  skipSpaces(): void {
    while (this.text[this.pos] === ' ' || this.text[this.pos] === '\t') this.pos++;
  }

  done(): boolean {
    return this.pos >= this.text.length;
  }

  peek(s: string): boolean {
    return this.text.startsWith(s, this.pos);
  }

  quoted(): string {
    const start = this.pos;
    this.pos++; // opening quote
    while (!this.done() && this.text[this.pos] !== '"') this.pos += this.text[this.pos] === '\\' ? 2 : 1;
    if (this.done()) this.fail('unterminated quoted string');
    this.pos++;
    try {
      return JSON.parse(this.text.slice(start, this.pos)) as string;
    } catch {
      return this.fail('bad escape in quoted string');
    }
  }

  /** A field path component: quoted, or letters, digits, '_' and '-'. */
  component(): string {
    if (this.peek('"')) return this.quoted();
    const m = /^[A-Za-z0-9_-]+/.exec(this.text.slice(this.pos));
    if (!m) this.fail('expected a field name');
    this.pos += m[0].length;
    return m[0];
  }

  /** A value: quoted, /regex/ delimited, or everything up to the next ','. */
  value(): string {
    if (this.peek('"')) return this.quoted();
    if (this.peek('/')) {
      const end = this.text.indexOf('/', this.pos + 1);
      if (end < 0) this.fail('unterminated /regex/');
      const v = this.text.slice(this.pos + 1, end);
      this.pos = end + 1;
      return v;
    }
    const end = this.text.indexOf(',', this.pos);
    const v = this.text.slice(this.pos, end < 0 ? undefined : end).trim();
    this.pos = end < 0 ? this.text.length : end;
    return v;
  }
}

function parseSelectors(filter: string): Selector[] {
  const s = new Scanner(filter, filter);
  const out: Selector[] = [];
  for (;;) {
    s.skipSpaces();
    const path = [s.component()];
    while (s.peek('.')) {
      s.pos++;
      path.push(s.component());
    }
    s.skipSpaces();
    const sel: Selector = { path };
    const op = (['==', '!=', '~='] as const).find((o) => s.peek(o));
    if (op) {
      s.pos += 2;
      s.skipSpaces();
      sel.op = op;
      sel.value = s.value();
      if (op === '~=') {
        try {
          sel.regex = new RegExp(sel.value);
        } catch {
          s.fail(`bad regular expression ${JSON.stringify(sel.value)}`);
        }
      }
    }
    out.push(sel);
    s.skipSpaces();
    if (s.done()) return out;
    if (!s.peek(',')) s.fail('expected "," or an operator');
    s.pos++;
  }
}

function fieldOf(rec: SnapshotRecord, path: string[], filter: string): string | undefined {
  const [head, ...rest] = path;
  if (head === 'labels') return rest.length === 0 ? undefined : rec.labels[rest.join('.')];
  if (rest.length > 0) {
    throw new CairnError(ErrorCode.INVALID_INPUT, `filter ${JSON.stringify(filter)}: ${head} has no subfields`);
  }
  if (head === 'name') return rec.key;
  if (head === 'parent') return rec.parent;
  if (head === 'kind') return rec.kind;
  throw new CairnError(
    ErrorCode.INVALID_INPUT,
    `filter ${JSON.stringify(filter)}: unknown field ${JSON.stringify(head)}`,
  );
}

function matches(rec: SnapshotRecord, sel: Selector, filter: string): boolean {
  const v = fieldOf(rec, sel.path, filter);
  switch (sel.op) {
    case undefined:
      return v !== undefined && v !== '';
    case '==':
      return v === sel.value;
    case '!=':
      return v !== sel.value;
    case '~=':
      return v !== undefined && sel.regex!.test(v);
  }
}

/** Compiles a request's filters; no filters (or only empty ones) match everything. */
export function compileFilters(filters: readonly string[]): SnapshotFilter {
  const alternatives = filters.filter((f) => f.trim() !== '').map((f) => ({ f, selectors: parseSelectors(f) }));
  if (alternatives.length === 0) return () => true;
  // Validate field names now, so a bad filter fails even over an empty store.
  const probe: SnapshotRecord = {
    id: 0,
    key: '',
    parent: '',
    kind: 'active',
    createdMs: 0,
    updatedMs: 0,
    labels: {},
    sizeBytes: 0,
    inodes: 0,
  };
  for (const a of alternatives) for (const sel of a.selectors) fieldOf(probe, sel.path, a.f);
  return (rec) => alternatives.some((a) => a.selectors.every((sel) => matches(rec, sel, a.f)));
}
