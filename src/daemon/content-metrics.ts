import type { Registry } from 'prom-client';
import { pulledMetric, type PulledValue } from '../metrics/pulled.js';
import type { ContentStats } from './mounts.js';

type TierField = 'hits' | 'misses' | 'evictions' | 'bytes' | 'corrupt';

/**
 * The content path's own counts (fetcher and cache tiers), exposed through
 * `registry` as they are at each scrape; `mounts` is the number of mounts served.
 */
export function registerContentMetrics(registry: Registry, stats: () => ContentStats, mounts: () => number): void {
  const fetched = (name: string, help: string, value: (s: ContentStats) => number): void =>
    pulledMetric(registry, 'counter', name, help, [], () => [[{}, value(stats())]]);
  fetched('cairn_fetch_bytes_total', 'Content bytes received from registries (verified or not)', (s) => s.bytesFetched);
  fetched('cairn_fetch_retries_total', 'Fetch attempts that failed and were retried', (s) => s.retries);
  fetched('cairn_fetch_errors_total', 'Chunk fetches that failed for good (after retries)', (s) => s.fetchErrors);
  fetched(
    'cairn_fetch_verify_failures_total',
    'Fetched bytes that did not match their digest',
    (s) => s.verifyFailures ?? 0,
  );
  fetched(
    'cairn_fetch_deadlines_missed_total',
    'Chunk fetches that failed because their deadline passed',
    (s) => s.deadlinesMissed ?? 0,
  );
  const tier = (kind: 'counter' | 'gauge', name: string, help: string, field: TierField): void =>
    pulledMetric(registry, kind, name, help, ['tier'], () =>
      Object.entries(stats().tiers).flatMap(([t, v]): PulledValue[] => {
        const value = v[field];
        return value === undefined ? [] : [[{ tier: t }, value]];
      }),
    );
  tier('counter', 'cairn_cache_hits_total', 'Chunk reads a cache tier answered itself', 'hits');
  tier('counter', 'cairn_cache_misses_total', 'Chunk reads a cache tier passed to the tier below', 'misses');
  tier('counter', 'cairn_cache_evictions_total', 'Chunks a cache tier dropped to stay under its budget', 'evictions');
  tier(
    'counter',
    'cairn_cache_corrupt_total',
    'Cached chunks that failed verification (dropped, fetched again)',
    'corrupt',
  );
  tier('gauge', 'cairn_cache_bytes', 'Bytes a cache tier holds now', 'bytes');
  pulledMetric(registry, 'gauge', 'cairn_daemon_mounts', 'Mounts the daemon serves', [], () => [[{}, mounts()]]);
}
