import { CairnError, ErrorCode } from '../model/errors.js';
import { BlobStore } from './blob-store.js';
import { MetadataStore } from './metadata.js';

/** The registry's storage: blobs on disk and metadata in SQLite under one root. */
export class RegistryStore {
  readonly blobs: BlobStore;
  readonly meta: MetadataStore;

  private constructor(
    readonly root: string,
    readonly: boolean,
  ) {
    this.blobs = new BlobStore({ root });
    this.meta = new MetadataStore({ root, readonly });
  }

  static async open(root: string, opts: { readonly?: boolean } = {}): Promise<RegistryStore> {
    if (typeof root !== 'string' || root === '')
      throw new CairnError(ErrorCode.INVALID_OPTION, '--root: a directory is required');
    const blobs = new BlobStore({ root });
    if (!opts.readonly) await blobs.init();
    return new RegistryStore(root, opts.readonly ?? false);
  }

  close(): void {
    this.meta.close();
  }
}
