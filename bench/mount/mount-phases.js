#!/usr/bin/env node
// Where the daemon's time goes when it mounts an image: the steps of MountManager.mount
// (dist/daemon/mounts.js) done one by one with a timer around each, in this child process:
// image metadata, recipe download (HTTP + gunzip), recipe decode (sha256 + JSON.parse +
// validation), UnionView.build, and the FUSE mount itself (fuse-native). This process serves
// the FUSE mount it makes and never touches it; it unmounts it after each repetition.
//
//   node bench/mount/mount-phases.js URL REPO:TAG MNT [REPS]   (prints JSON)
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { request } from 'undici';
import { DIST, median } from '../lib/bench.js';

const [url, ref, mnt, repsArg] = process.argv.slice(2);
const reps = Number(repsArg ?? 5);
const { RegistryClient } = await import(join(DIST, 'fetch/registry-client.js'));
const { decodeRecipe } = await import(join(DIST, 'model/recipe.js'));
const { UnionView } = await import(join(DIST, 'union/view.js'));
const { ImageFs } = await import(join(DIST, 'daemon/image-fs.js'));
const { FuseMount } = await import(join(DIST, 'fuse/adapter.js'));

const i = ref.lastIndexOf(':');
const [repository, reference] = [ref.slice(0, i), ref.slice(i + 1)];
const nullSource = { read: async () => Buffer.alloc(0) };
const phases = {
  image: [],
  recipeHttp: [],
  gunzip: [],
  sha256: [],
  jsonParse: [],
  decodeRecipe: [],
  unionBuild: [],
  fuseMount: [],
  total: [],
};
let sizes;
for (let r = 0; r < reps; r++) {
  const client = new RegistryClient({ url });
  const t0 = performance.now();
  const image = await client.image(repository, reference);
  const t1 = performance.now();
  const bodies = await Promise.all(
    image.layers.map(async (l) => {
      const res = await request(`${url}/api/v1/recipes/${l.recipe}`, { headers: { 'accept-encoding': 'gzip' } });
      return Buffer.from(await res.body.arrayBuffer());
    }),
  );
  const t2 = performance.now();
  const raws = bodies.map((b) => gunzipSync(b));
  const t3 = performance.now();
  for (const raw of raws) createHash('sha256').update(raw.toString('utf8')).digest('hex');
  const t4 = performance.now();
  for (const raw of raws) JSON.parse(raw.toString('utf8'));
  const t5 = performance.now();
  const recipes = raws.map((raw, k) => decodeRecipe(raw, { gzipped: false, expected: image.layers[k].recipe }));
  const t6 = performance.now();
  const view = UnionView.build(
    recipes.map((x) => x.entries),
    { lookup: 'flat' },
  );
  const t7 = performance.now();
  const fuse = new FuseMount(mnt, new ImageFs(view, nullSource, { readDeadlineMs: 10_000 }), {
    readDeadlineMs: 10_000,
  });
  await fuse.mount();
  const t8 = performance.now();
  await fuse.unmount();
  await client.close();
  sizes ??= { gzipBytes: bodies.reduce((a, b) => a + b.length, 0), jsonBytes: raws.reduce((a, b) => a + b.length, 0) };
  phases.image.push(t1 - t0);
  phases.recipeHttp.push(t2 - t1);
  phases.gunzip.push(t3 - t2);
  phases.sha256.push(t4 - t3);
  phases.jsonParse.push(t5 - t4);
  phases.decodeRecipe.push(t6 - t5);
  phases.unionBuild.push(t7 - t6);
  phases.fuseMount.push(t8 - t7);
  // What the daemon does in sequence: image, recipes (HTTP + gunzip + decode), build, mount.
  phases.total.push(t1 - t0 + (t2 - t1) + (t3 - t2) + (t6 - t5) + (t7 - t6) + (t8 - t7));
}
const out = {
  ref,
  reps,
  recipeBytes: sizes,
  firstMs: Object.fromEntries(Object.entries(phases).map(([k, v]) => [k, v[0]])),
  medianMs: Object.fromEntries(Object.entries(phases).map(([k, v]) => [k, median(v)])),
};
process.stdout.write(`${JSON.stringify(out)}\n`);
