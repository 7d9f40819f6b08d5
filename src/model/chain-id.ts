/**
 * containerd's (and the OCI image spec's) chainIDs: the identity of a stack of
 * layers, and so the name of a committed snapshot holding it. The bottom
 * layer's chainID is its diffID; each one above is sha256("PARENT_CHAINID DIFFID").
 */
import { sha256, type Digest } from './digest.js';

/** The chainID of each prefix of the layers (bottom first). */
export function chainIds(diffIds: readonly string[]): Digest[] {
  const out: Digest[] = [];
  for (const d of diffIds) out.push(out.length === 0 ? (d as Digest) : sha256(`${out[out.length - 1]!} ${d}`));
  return out;
}
