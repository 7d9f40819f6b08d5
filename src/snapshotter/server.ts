/**
 * Serves a Snapshotter as containerd.services.snapshots.v1.Snapshots on a unix
 * socket, for containerd's `[proxy_plugins.NAME] type = "snapshot"`.
 */
import {
  Server,
  ServerCredentials,
  status,
  type sendUnaryData,
  type ServerUnaryCall,
  type ServerWritableStream,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { rm } from 'node:fs/promises';
import { CairnError, ErrorCode } from '../model/errors.js';
import type { Logger } from '../util/log.js';
import { toServiceError } from './grpc-status.js';
import {
  toInfoMessage,
  toMountMessages,
  type CommitRequest,
  type CreateRequest,
  type KeyRequest,
  type ListRequest,
  type ListResponse,
  type UpdateRequest,
} from './messages.js';
import { snapshotsServiceDefinition } from './proto.js';
import type { Snapshotter } from './snapshotter.js';
import type { RemotePreparer } from './remote-prepare.js';

/** Infos per List message: containerd reads a stream of batches. */
const LIST_BATCH = 100;

export interface SnapshotterServerOptions {
  snapshotter: Snapshotter;
  /** Path of the unix socket to listen on (replaced if a stale one is there). */
  socketPath: string;
  log: Logger;
  /** Prepare with remote-snapshot labels goes through it (lazy or counted fallback); without it, every Prepare is ordinary. */
  remote?: RemotePreparer;
}

export class SnapshotterServer {
  private readonly server = new Server();
  private readonly opts: SnapshotterServerOptions;
  private closed = false;

  constructor(opts: SnapshotterServerOptions) {
    if (!opts?.snapshotter)
      throw new CairnError(ErrorCode.INVALID_OPTION, 'SnapshotterServer: snapshotter is required');
    if (typeof opts.socketPath !== 'string' || opts.socketPath === '') {
      throw new CairnError(ErrorCode.INVALID_OPTION, 'SnapshotterServer: socketPath must be a non-empty path');
    }
    this.opts = opts;
    this.server.addService(snapshotsServiceDefinition(), this.handlers());
  }

  async listen(): Promise<void> {
    await rm(this.opts.socketPath, { force: true });
    await new Promise<void>((resolve, reject) => {
      this.server.bindAsync(`unix://${this.opts.socketPath}`, ServerCredentials.createInsecure(), (err) => {
        if (err)
          reject(
            new CairnError(ErrorCode.UNAVAILABLE, `listen on ${this.opts.socketPath}: ${err.message}`, { cause: err }),
          );
        else resolve();
      });
    });
  }

  /** Stops accepting calls and waits for running ones (at most graceMs, then cuts them). */
  async close(graceMs = 2000): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    await rm(this.opts.socketPath, { force: true });
  }

  private unary<Req, Res>(method: string, fn: (req: Req) => Res | Promise<Res>) {
    const { log } = this.opts;
    return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>): void => {
      const started = Date.now();
      Promise.resolve()
        .then(() => fn(call.request))
        .then(
          (res) => {
            log.debug('call', { method, request: call.request, ms: Date.now() - started });
            callback(null, res);
          },
          (err: unknown) => {
            const e = toServiceError(err, method);
            // ALREADY_EXISTS is an answer containerd expects (a lazy layer, a key it retries), not a failure.
            if (e.code === status.ALREADY_EXISTS)
              log.debug('call answered ALREADY_EXISTS', { method, request: call.request });
            else log.info('call failed', { method, request: call.request, error: e.details });
            callback(e, null);
          },
        );
    };
  }

  private handlers(): UntypedServiceImplementation {
    const s = this.opts.snapshotter;
    const remote = this.opts.remote;
    return {
      Prepare: this.unary('Prepare', async (r: CreateRequest) =>
        toMountMessages(
          remote ? await remote.prepare(r.key, r.parent, r.labels) : s.prepare(r.key, r.parent, r.labels),
        ),
      ),
      View: this.unary('View', (r: CreateRequest) => toMountMessages(s.view(r.key, r.parent, r.labels))),
      Mounts: this.unary('Mounts', (r: KeyRequest) => toMountMessages(s.mounts(r.key))),
      Commit: this.unary('Commit', async (r: CommitRequest) => {
        await s.commit(r.name, r.key, r.labels);
        return {};
      }),
      Remove: this.unary('Remove', async (r: KeyRequest) => {
        await s.remove(r.key);
        return {};
      }),
      Stat: this.unary('Stat', (r: KeyRequest) => ({ info: toInfoMessage(s.stat(r.key)) })),
      Update: this.unary('Update', (r: UpdateRequest) => {
        if (!r.info) throw new CairnError(ErrorCode.INVALID_INPUT, 'Update: info is required');
        return { info: toInfoMessage(s.update(r.info, r.updateMask?.paths ?? [])) };
      }),
      Usage: this.unary('Usage', async (r: KeyRequest) => {
        const u = await s.usage(r.key);
        return { size: u.sizeBytes, inodes: u.inodes };
      }),
      Cleanup: this.unary('Cleanup', async () => {
        const removed = await s.cleanup();
        if (removed.length > 0) this.opts.log.info('cleanup removed directories', { removed });
        return {};
      }),
      List: (call: ServerWritableStream<ListRequest, ListResponse>) => {
        try {
          const infos = s.list(call.request.filters).map(toInfoMessage);
          for (let i = 0; i < infos.length; i += LIST_BATCH) call.write({ info: infos.slice(i, i + LIST_BATCH) });
          call.end();
        } catch (err) {
          const e = toServiceError(err, 'List');
          this.opts.log.info('call failed', { method: 'List', request: call.request, error: e.details });
          call.emit('error', e);
        }
      },
    };
  }
}
