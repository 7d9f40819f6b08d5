/** The BlobSource contract suite, run against HttpBlobSource over a real registry. */
import { afterAll, beforeAll } from 'vitest';
import { join } from 'node:path';
import { HttpBlobSource } from '../../src/fetch/http-source.js';
import { RegistryStore } from '../../src/registry/store.js';
import { blobSourceContract } from '../contract/blob-source.contract.js';
import { contractContents } from '../contract/contents.js';
import { dir, file, layer } from '../fixtures/layers.js';
import { importFixtureImage, startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { makeTempDir, type TempDir } from '../fixtures/tmp.js';

const contents = contractContents();
let tmp: TempDir;
let store: RegistryStore;
let reg: RunningRegistry;

beforeAll(async () => {
  tmp = await makeTempDir('cairn-fetch-contract-');
  store = await RegistryStore.open(join(tmp.path, 'registry'));
  const files = [...contents.values()].map((data, i) => file(`c/${i}`, data));
  await importFixtureImage(store, {
    image: { ref: 'contract:1', layers: [layer([dir('c'), ...files], 'none')] },
    target: 'lib/contract:1',
  });
  reg = await startRegistry(store, { closeAfterTest: false });
});

afterAll(async () => {
  await reg?.close();
  store?.close();
  await tmp?.cleanup();
});

blobSourceContract('HttpBlobSource over a registry', () => {
  const source = new HttpBlobSource({ url: reg.url, deadlineMs: 5000 });
  return Promise.resolve({ source, contents, cleanup: () => source.close() });
});
