import { CairnError, ErrorCode } from './errors.js';

const REPO_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

/** Validates a repository name as the OCI distribution spec defines it. */
export function checkRepositoryName(name: string, what = 'repository'): string {
  if (name.length > 255 || !REPO_RE.test(name)) {
    throw new CairnError(
      ErrorCode.INVALID_INPUT,
      `${what}: ${JSON.stringify(name.slice(0, 300))} is not a valid repository name`,
    );
  }
  return name;
}

export function checkTag(tag: string, what = 'tag'): string {
  if (!TAG_RE.test(tag))
    throw new CairnError(ErrorCode.INVALID_INPUT, `${what}: ${JSON.stringify(tag.slice(0, 200))} is not a valid tag`);
  return tag;
}

/** Parses `REPO:TAG` (the tag after the last ':' that is not part of a registry port). */
export function parseRepoTag(value: string, what = 'REPO:TAG'): { repository: string; tag: string } {
  const i = value.lastIndexOf(':');
  if (i <= 0 || value.slice(i).includes('/')) {
    throw new CairnError(ErrorCode.INVALID_INPUT, `${what}: ${JSON.stringify(value)} needs the form repository:tag`);
  }
  return { repository: checkRepositoryName(value.slice(0, i), what), tag: checkTag(value.slice(i + 1), what) };
}
