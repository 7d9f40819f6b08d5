/**
 * A containerd config (version 2) with cairn's snapshotter as a proxy plugin:
 * the snippet the README documents, plus a private root, state and socket (what
 * the tests and the bench start containerd with).
 */
export interface ContainerdConfigOptions {
  root: string;
  state: string;
  /** containerd's own gRPC socket. */
  address: string;
  /** `cairn snapshotter --socket`. */
  snapshotterAddress: string;
  /** The proxy plugin's name, what `--snapshotter` says (default cairn). */
  name?: string;
}

export function containerdConfig(o: ContainerdConfigOptions): string {
  return [
    'version = 2',
    `root = ${JSON.stringify(o.root)}`,
    `state = ${JSON.stringify(o.state)}`,
    '[grpc]',
    `  address = ${JSON.stringify(o.address)}`,
    `[proxy_plugins.${o.name ?? 'cairn'}]`,
    '  type = "snapshot"',
    `  address = ${JSON.stringify(o.snapshotterAddress)}`,
    '',
  ].join('\n');
}
