/**
 * A small client of containerd's gRPC API (Content, Images, Leases, Snapshots),
 * from the .proto files in proto/ loaded at run time. Every call carries the
 * namespace header containerd requires, the lease header when one is held, and
 * a deadline; failures come back as CairnErrors (fromServiceError).
 */
import {
  credentials,
  loadPackageDefinition,
  Metadata,
  type Client,
  type ClientDuplexStream,
  type GrpcObject,
  type ServiceClientConstructor,
} from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { CairnError, ErrorCode } from '../model/errors.js';
import { fromServiceError } from '../snapshotter/grpc-status.js';
import { LOADER_OPTIONS, PROTO_ROOT, SNAPSHOTS_PROTO } from '../snapshotter/proto.js';

const PROTOS = [
  'containerd/services/content/v1/content.proto',
  'containerd/services/images/v1/images.proto',
  'containerd/services/leases/v1/leases.proto',
  SNAPSHOTS_PROTO,
];

const SERVICES = {
  content: ['containerd', 'services', 'content', 'v1', 'Content'],
  images: ['containerd', 'services', 'images', 'v1', 'Images'],
  leases: ['containerd', 'services', 'leases', 'v1', 'Leases'],
  snapshots: ['containerd', 'services', 'snapshots', 'v1', 'Snapshots'],
} as const;

export type ServiceName = keyof typeof SERVICES;

let loaded: GrpcObject | undefined;

function constructorOf(name: ServiceName): ServiceClientConstructor {
  loaded ??= loadPackageDefinition(loadSync(PROTOS, { ...LOADER_OPTIONS, includeDirs: [PROTO_ROOT] }));
  let cur: unknown = loaded;
  for (const p of SERVICES[name]) cur = (cur as Record<string, unknown> | undefined)?.[p];
  if (typeof cur !== 'function')
    throw new CairnError(ErrorCode.INTERNAL, `proto/: no service ${SERVICES[name].join('.')}`);
  return cur as ServiceClientConstructor;
}

type UnaryMethod = (
  req: unknown,
  md: Metadata,
  opts: { deadline: number },
  cb: (err: unknown, res: unknown) => void,
) => void;
type DuplexMethod = (md: Metadata, opts: { deadline: number }) => ClientDuplexStream<unknown, unknown>;

export interface ContainerdClientOptions {
  /** containerd's socket, e.g. /run/containerd/containerd.sock. */
  address: string;
  namespace: string;
  /** Deadline of one call. */
  callTimeoutMs?: number;
}

export class ContainerdClient {
  private readonly clients = new Map<ServiceName, Client>();
  private readonly callTimeoutMs: number;
  /** The lease every call is made under, once set. */
  lease: string | undefined;

  constructor(private readonly opts: ContainerdClientOptions) {
    if (typeof opts.address !== 'string' || opts.address === '')
      throw new CairnError(ErrorCode.INVALID_OPTION, "--address: must be the path of containerd's socket");
    if (!/^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$/.test(opts.namespace ?? ''))
      throw new CairnError(
        ErrorCode.INVALID_OPTION,
        `--namespace: ${JSON.stringify(opts.namespace)} is not a containerd namespace`,
      );
    this.callTimeoutMs = opts.callTimeoutMs ?? 60_000;
  }

  private client(name: ServiceName): Client {
    let c = this.clients.get(name);
    if (!c) {
      const Ctor = constructorOf(name);
      c = new Ctor(`unix://${this.opts.address}`, credentials.createInsecure());
      this.clients.set(name, c);
    }
    return c;
  }

  private metadata(): Metadata {
    const md = new Metadata();
    md.set('containerd-namespace', this.opts.namespace);
    if (this.lease) md.set('containerd-lease', this.lease);
    return md;
  }

  /** One unary call: `service.method(req)`. */
  call<Res>(service: ServiceName, method: string, req: object): Promise<Res> {
    const c = this.client(service) as unknown as Record<string, UnaryMethod | undefined>;
    const fn = c[method];
    if (typeof fn !== 'function') throw new CairnError(ErrorCode.INTERNAL, `no method ${service}.${method}`);
    const what = `containerd ${service}.${method}`;
    return new Promise<Res>((resolve, reject) => {
      fn.call(c, req, this.metadata(), { deadline: Date.now() + this.callTimeoutMs }, (err, res) => {
        if (err) reject(fromServiceError(err, what));
        else resolve(res as Res);
      });
    });
  }

  /** A bidirectional stream call: sends `reqs`, half-closes, and collects the answers. */
  stream<Res>(service: ServiceName, method: string, reqs: object[]): Promise<Res[]> {
    const c = this.client(service) as unknown as Record<string, DuplexMethod | undefined>;
    const fn = c[method];
    if (typeof fn !== 'function') throw new CairnError(ErrorCode.INTERNAL, `no method ${service}.${method}`);
    const what = `containerd ${service}.${method}`;
    return new Promise<Res[]>((resolve, reject) => {
      const call = fn.call(c, this.metadata(), { deadline: Date.now() + this.callTimeoutMs });
      const out: Res[] = [];
      call.on('data', (r: unknown) => out.push(r as Res));
      call.on('error', (err: unknown) => reject(fromServiceError(err, what)));
      call.on('end', () => resolve(out));
      for (const r of reqs) call.write(r);
      call.end();
    });
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}
