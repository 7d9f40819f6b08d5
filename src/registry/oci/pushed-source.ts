import { createReadStream } from 'node:fs';
import { CairnError, ErrorCode } from '../../model/errors.js';
import type { Digest } from '../../model/digest.js';
import type { Descriptor, ImageConfig, ImageManifest, Platform } from '../../model/oci.js';
import type { ImageSource, ResolvedImage } from '../image-source.js';

/** How the /v2 API finds a blob a pushed manifest names: a file it holds, or a layer it can rebuild. */
export interface PushedBlobs {
  /** Path of a blob held whole (uploaded), or undefined. */
  heldPath(digest: Digest): Promise<string | undefined>;
  /** A stored layer's tar rebuilt from its recipe, when `digest` is a known diffID. */
  rebuilt(digest: Digest): AsyncIterable<Buffer> | undefined;
}

/**
 * A pushed image manifest and the blobs behind it, as an ImageSource, so a
 * push is ingested by the same importer as `cairn import` (which verifies
 * every layer against its digest and diffID).
 */
export class PushedImageSource implements ImageSource {
  readonly description: string;

  constructor(
    private readonly image: {
      repository: string;
      manifestDigest: Digest;
      manifestBytes: Buffer;
      manifest: ImageManifest;
      configBytes: Buffer;
      config: ImageConfig;
    },
    private readonly blobs: PushedBlobs,
  ) {
    this.description = `pushed manifest ${image.repository}@${image.manifestDigest}`;
  }

  refs(): string[] {
    return [];
  }

  resolve(_ref: string | undefined, platform: Platform): Promise<ResolvedImage> {
    const c = this.image.config;
    const own: Platform | undefined =
      c.os && c.architecture
        ? { os: c.os, architecture: c.architecture, ...(c.variant ? { variant: c.variant } : {}) }
        : undefined;
    return Promise.resolve({
      manifestDigest: this.image.manifestDigest,
      manifestBytes: this.image.manifestBytes,
      manifest: this.image.manifest,
      configBytes: this.image.configBytes,
      config: this.image.config,
      platform: own ?? platform,
    });
  }

  async *openBlob(d: Descriptor): AsyncIterable<Buffer> {
    const path = await this.blobs.heldPath(d.digest);
    if (path !== undefined) {
      yield* createReadStream(path, { highWaterMark: 1024 * 1024 }) as AsyncIterable<Buffer>;
      return;
    }
    const rebuilt = this.blobs.rebuilt(d.digest);
    if (!rebuilt) throw new CairnError(ErrorCode.NOT_FOUND, `${this.description}: blob ${d.digest} is unknown`);
    yield* rebuilt;
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
