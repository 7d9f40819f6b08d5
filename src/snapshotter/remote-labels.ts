/**
 * The labels of a remote-snapshot Prepare: what containerd (or `cairn containerd
 * pull`) says about the layer it wants, and what cairn reads from them.
 *
 * containerd's metadata layer passes to a snapshotter only `containerd.io/snapshot.ref`
 * and labels under `containerd.io/snapshot/`: cairn's own labels live there too,
 * or they would never reach it.
 */

/** The chainID of the committed snapshot the Prepare wants (containerd's remote-snapshot target). */
export const LABEL_TARGET = 'containerd.io/snapshot.ref';
/** CRI's: the image reference (`HOST/REPO:TAG` or `HOST/REPO@DIGEST`) and the layer's blob digest. */
export const LABEL_CRI_IMAGE_REF = 'containerd.io/snapshot/cri.image-ref';
export const LABEL_CRI_LAYER_DIGEST = 'containerd.io/snapshot/cri.layer-digest';
/** cairn's: the image in cairn's registry as `REPO@DIGEST` and the layer's index in it (0 = bottom). */
export const LABEL_CAIRN_IMAGE = 'containerd.io/snapshot/cairn.image';
export const LABEL_CAIRN_LAYER_INDEX = 'containerd.io/snapshot/cairn.layer-index';

/** Where a remote layer is to be found in cairn's registry. */
export interface RemoteLayerRef {
  /** The committed snapshot's name (the chainID containerd gave as target). */
  target: string;
  repository: string;
  /** A tag or a digest. */
  reference: string;
  /** The layer by index (cairn's labels) ... */
  layerIndex?: number;
  /** ... or by its blob digest (CRI's labels). */
  layerDigest?: string;
}

/** A remote ref, or why the labels do not make one (the reason a fallback is logged with). */
export type RemoteLabels = { ok: true; ref: RemoteLayerRef } | { ok: false; reason: string };

/** `[HOST[:PORT]/]REPO[:TAG]` or `...REPO@DIGEST`: the repository (without the host) and the tag or digest (default latest). */
export function parseImageRef(ref: string): { repository: string; reference: string } | undefined {
  const at = ref.indexOf('@');
  let name: string;
  let reference: string;
  if (at >= 0) {
    name = ref.slice(0, at);
    reference = ref.slice(at + 1);
  } else {
    const colon = ref.lastIndexOf(':');
    const slash = ref.lastIndexOf('/');
    if (colon > slash) {
      name = ref.slice(0, colon);
      reference = ref.slice(colon + 1);
    } else {
      name = ref;
      reference = 'latest';
    }
  }
  const parts = name.split('/');
  // A first part with a dot, a colon or "localhost" is a registry host (the distribution rule).
  if (parts.length > 1 && /[.:]|^localhost$/.test(parts[0]!)) parts.shift();
  const repository = parts.join('/');
  if (repository === '' || reference === '') return undefined;
  return { repository, reference };
}

export function parseRemoteLabels(labels: Record<string, string>): RemoteLabels {
  const target = labels[LABEL_TARGET];
  if (target === undefined || target === '') return { ok: false, reason: `no ${LABEL_TARGET} label` };
  const image = labels[LABEL_CAIRN_IMAGE];
  if (image !== undefined) {
    const at = image.indexOf('@');
    const index = Number(labels[LABEL_CAIRN_LAYER_INDEX]);
    if (at <= 0 || !Number.isSafeInteger(index) || index < 0) {
      return {
        ok: false,
        reason: `${LABEL_CAIRN_IMAGE} ${JSON.stringify(image)} must be REPO@DIGEST with ${LABEL_CAIRN_LAYER_INDEX} a layer index`,
      };
    }
    return {
      ok: true,
      ref: { target, repository: image.slice(0, at), reference: image.slice(at + 1), layerIndex: index },
    };
  }
  const criRef = labels[LABEL_CRI_IMAGE_REF];
  const criDigest = labels[LABEL_CRI_LAYER_DIGEST];
  if (criRef !== undefined && criDigest !== undefined) {
    const img = parseImageRef(criRef);
    if (!img) return { ok: false, reason: `${LABEL_CRI_IMAGE_REF} ${JSON.stringify(criRef)} names no repository` };
    return { ok: true, ref: { target, ...img, layerDigest: criDigest } };
  }
  return {
    ok: false,
    reason: `no layer labels (${LABEL_CAIRN_IMAGE} + ${LABEL_CAIRN_LAYER_INDEX}, or ${LABEL_CRI_IMAGE_REF} + ${LABEL_CRI_LAYER_DIGEST})`,
  };
}
