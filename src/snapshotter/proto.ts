/**
 * Loads containerd's Snapshots service definition at run time from the .proto
 * files in proto/ (written from containerd's public API); no generated code.
 */
import {
  loadPackageDefinition,
  type GrpcObject,
  type ServiceClientConstructor,
  type ServiceDefinition,
} from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';
import { CairnError, ErrorCode } from '../model/errors.js';

/** proto/ at the repository root: two levels up from src/snapshotter and from dist/snapshotter. */
export const PROTO_ROOT = fileURLToPath(new URL('../../proto/', import.meta.url));

export const SNAPSHOTS_PROTO = 'containerd/services/snapshots/v1/snapshots.proto';

/** Field conventions of the loaded messages: camelCase names, enums as strings, int64 as numbers. */
export const LOADER_OPTIONS = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  arrays: true,
  objects: true,
};

let cached: ServiceClientConstructor | undefined;

/** The Snapshots service constructor (its .service is the definition a server adds). */
export function snapshotsService(): ServiceClientConstructor {
  if (cached) return cached;
  const def = loadSync(SNAPSHOTS_PROTO, { ...LOADER_OPTIONS, includeDirs: [PROTO_ROOT] });
  const pkg = loadPackageDefinition(def);
  const ctor = walk(pkg, ['containerd', 'services', 'snapshots', 'v1', 'Snapshots']);
  if (typeof ctor !== 'function') {
    throw new CairnError(
      ErrorCode.INTERNAL,
      `${SNAPSHOTS_PROTO}: no service containerd.services.snapshots.v1.Snapshots`,
    );
  }
  cached = ctor as ServiceClientConstructor;
  return cached;
}

export function snapshotsServiceDefinition(): ServiceDefinition {
  return snapshotsService().service;
}

function walk(obj: GrpcObject, path: string[]): unknown {
  let cur: unknown = obj;
  for (const p of path) cur = (cur as Record<string, unknown> | undefined)?.[p];
  return cur;
}
