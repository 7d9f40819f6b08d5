import { describe, expect, it } from 'vitest';
import {
  decodeProfile,
  encodeProfile,
  MAX_PROFILE_FILES,
  mergeEntry,
  mergeProfiles,
  PROFILE_BLOCK_BYTES,
} from '../../src/model/read-profile.js';
import { ProfileRecorder } from '../../src/daemon/prefetch.js';
import type { Digest } from '../../src/model/digest.js';

const dg = (n: number): Digest => `sha256:${n.toString(16).padStart(64, '0')}`;

describe('read profile codec', () => {
  it('round-trips, dropping repeated contents', () => {
    const entries = [
      { digest: dg(2), size: 10 },
      { digest: dg(1), size: 0 },
    ];
    expect(decodeProfile(encodeProfile([...entries, entries[0]!]), 'p')).toEqual(entries);
  });

  it('keeps the blocks of large contents, and drops a list naming every block', () => {
    const size = 3 * PROFILE_BLOCK_BYTES + 1;
    const text = JSON.stringify({
      files: [
        [dg(1), size, [0, 3]],
        [dg(2), size, [0, 1, 2, 3]],
      ],
    });
    expect(decodeProfile(text, 'p')).toEqual([
      { digest: dg(1), size, blocks: [0, 3] },
      { digest: dg(2), size },
    ]);
    expect(mergeEntry({ digest: dg(1), size, blocks: [3, 0].sort() }, { digest: dg(1), size, blocks: [1] })).toEqual({
      digest: dg(1),
      size,
      blocks: [0, 1, 3],
    });
    expect(mergeEntry({ digest: dg(1), size, blocks: [0] }, { digest: dg(1), size })).toEqual({ digest: dg(1), size });
  });

  it('names the input and the bad entry', () => {
    for (const blocks of [[], [4], [1, 1], [2, 1], [-1], [0.5], 'all']) {
      expect(() =>
        decodeProfile(JSON.stringify({ files: [[dg(1), 3 * PROFILE_BLOCK_BYTES + 1, blocks]] }), 'p'),
      ).toThrow(/p: entry 0 .*: blocks must be ascending block numbers below 4/);
    }
    expect(() => decodeProfile('[]', 'profile X')).toThrow(/profile X: no "files" list/);
    expect(() => decodeProfile('{"files":[["sha256:00",1]]}', 'p')).toThrow(/p: entry 0 is not/);
    expect(() => decodeProfile(JSON.stringify({ files: [[dg(1), 1.5]] }), 'p')).toThrow(/entry 0 .* size/);
    expect(() => decodeProfile(JSON.stringify({ files: [[dg(1), 1, [0], 2]] }), 'p')).toThrow(/entry 0 is not/);
    const many = { files: Array.from({ length: MAX_PROFILE_FILES + 1 }, (_, i) => [dg(i), 1]) };
    expect(() => decodeProfile(JSON.stringify(many), 'p')).toThrow(
      expect.objectContaining({ code: 'CAIRN_ERR_TOO_LARGE' }),
    );
  });
});

describe('ProfileRecorder', () => {
  it('keeps first reads in order, each once, and gives them away once', () => {
    const r = new ProfileRecorder(60_000);
    r.note({ digest: dg(3), size: 3 }, 0, 3);
    r.note({ digest: dg(1), size: 1 }, 0, 1);
    r.note({ digest: dg(3), size: 3 }, 1, 2);
    expect(r.take()).toEqual([
      { digest: dg(3), size: 3 },
      { digest: dg(1), size: 1 },
    ]);
    r.note({ digest: dg(2), size: 2 }, 0, 2);
    expect(r.take()).toEqual([]);
  });

  it('names the blocks read of a large content, and none once every block was read', () => {
    const r = new ProfileRecorder(60_000);
    const big = { digest: dg(7), size: 10 * PROFILE_BLOCK_BYTES + 5 };
    const small = { digest: dg(8), size: 3 * PROFILE_BLOCK_BYTES };
    r.note(big, 0, 4096);
    r.note(big, 5 * PROFILE_BLOCK_BYTES - 10, 20); // straddles blocks 4 and 5
    r.note(big, 10 * PROFILE_BLOCK_BYTES, 5); // the last, short block
    for (let b = 0; b < 3; b++) r.note(small, b * PROFILE_BLOCK_BYTES, PROFILE_BLOCK_BYTES);
    expect(r.take()).toEqual([{ ...big, blocks: [0, 4, 5, 10] }, small]);
  });

  it('ignores reads after its window', async () => {
    const r = new ProfileRecorder(1);
    await new Promise((res) => setTimeout(res, 5));
    r.note({ digest: dg(1), size: 1 }, 0, 1);
    expect(r.take()).toEqual([]);
  });
});

describe('mergeProfiles', () => {
  it('keeps the first list, then what the second adds', () => {
    const a = { digest: dg(1), size: 1 };
    const b = { digest: dg(2), size: 2 };
    const c = { digest: dg(3), size: 3 };
    expect(mergeProfiles([b, a], [a, c, b])).toEqual([b, a, c]);
    const big = { digest: dg(4), size: 4 * PROFILE_BLOCK_BYTES };
    expect(mergeProfiles([{ ...big, blocks: [2] }], [{ ...big, blocks: [0] }])).toEqual([{ ...big, blocks: [0, 2] }]);
  });
});
