/** The shapes of the Snapshots service's messages as proto-loader presents them (see proto.ts options). */
import type { SnapshotInfo, SnapshotMount } from './snapshotter.js';
import type { SnapshotKind } from './metadata.js';

export interface Timestamp {
  seconds: number;
  nanos: number;
}

export type KindName = 'UNKNOWN' | 'VIEW' | 'ACTIVE' | 'COMMITTED';

export interface InfoMessage {
  name: string;
  parent: string;
  kind: KindName;
  createdAt: Timestamp | null;
  updatedAt: Timestamp | null;
  labels: Record<string, string>;
}

export interface MountMessage {
  type: string;
  source: string;
  target: string;
  options: string[];
}

export interface KeyRequest {
  snapshotter: string;
  key: string;
}

export interface CreateRequest extends KeyRequest {
  parent: string;
  labels: Record<string, string>;
}

export interface CommitRequest extends KeyRequest {
  name: string;
  labels: Record<string, string>;
}

export interface UpdateRequest {
  snapshotter: string;
  info: InfoMessage | null;
  updateMask: { paths: string[] } | null;
}

export interface ListRequest {
  snapshotter: string;
  filters: string[];
}

export interface MountsResponse {
  mounts: MountMessage[];
}

export interface InfoResponse {
  info: InfoMessage;
}

export interface ListResponse {
  info: InfoMessage[];
}

export interface UsageResponse {
  size: number;
  inodes: number;
}

const KIND_NAME: Record<SnapshotKind, KindName> = { view: 'VIEW', active: 'ACTIVE', committed: 'COMMITTED' };
const KIND_OF: Partial<Record<KindName, SnapshotKind>> = { VIEW: 'view', ACTIVE: 'active', COMMITTED: 'committed' };

export function kindName(kind: SnapshotKind): KindName {
  return KIND_NAME[kind];
}

export function kindOf(name: KindName): SnapshotKind | undefined {
  return KIND_OF[name];
}

export function toTimestamp(ms: number): Timestamp {
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 };
}

export function fromTimestamp(t: Timestamp | null): number {
  return t ? Number(t.seconds) * 1000 + Math.floor(t.nanos / 1_000_000) : 0;
}

export function toInfoMessage(info: SnapshotInfo): InfoMessage {
  return {
    name: info.name,
    parent: info.parent,
    kind: kindName(info.kind),
    createdAt: toTimestamp(info.createdMs),
    updatedAt: toTimestamp(info.updatedMs),
    labels: info.labels,
  };
}

export function toMountMessages(mounts: SnapshotMount[]): MountsResponse {
  return { mounts: mounts.map((m) => ({ type: m.type, source: m.source, target: '', options: m.options })) };
}
