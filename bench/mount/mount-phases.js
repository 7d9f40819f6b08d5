#!/usr/bin/env node
// Where the daemon's time goes when it mounts an image: the steps of MountManager.mount
// (dist/daemon/mounts.js) done one by one with a timer around each, in this child process:
// image metadata, the registry's built view (HTTP, sha256, UnionView.decode), the FUSE mount
// itself (fuse-native); then, for comparison, the path a mount falls back to when the registry
// serves no view: recipe download (HTTP + gunzip), recipe decode (sha256 + JSON.parse +
// validation) and UnionView.build. This process serves the FUSE mount it makes and never
// touches it; it unmounts it after each repetition.
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
  viewHttp: [],
  viewSha256: [],
  viewDecode: [],
  viewTotal: [],
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
  const viewRes = await request(`${url}/api/v1/images/${image.digest}/view?layers=${image.layers.length}`);
  if (viewRes.statusCode !== 200) throw new Error(`view: HTTP ${viewRes.statusCode}`);
  const viewBody = Buffer.from(await viewRes.body.arrayBuffer());
  const v1 = performance.now();
  const viewDigest = `sha256:${createHash('sha256').update(viewBody).digest('hex')}`;
  if (viewDigest !== viewRes.headers['cairn-view-digest']) throw new Error('view digest mismatch');
  const v2 = performance.now();
  const restored = UnionView.decode(viewBody, { lookup: 'flat' }).view;
  const v3 = performance.now();
  const fuse = new FuseMount(mnt, new ImageFs(restored, nullSource, { readDeadlineMs: 10_000 }), {
    readDeadlineMs: 10_000,
  });
  await fuse.mount();
  const v4 = performance.now();
  await fuse.unmount();
  const r1 = performance.now();
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
  if (view.imageBytes !== restored.imageBytes) throw new Error('the restored view differs from the built one');
  await client.close();
  sizes ??= {
    gzipBytes: bodies.reduce((a, b) => a + b.length, 0),
    jsonBytes: raws.reduce((a, b) => a + b.length, 0),
    viewBytes: viewBody.length,
  };
  const fuseMs = v4 - v3;
  phases.image.push(t1 - t0);
  phases.viewHttp.push(v1 - t1);
  phases.viewSha256.push(v2 - v1);
  phases.viewDecode.push(v3 - v2);
  phases.viewTotal.push(t1 - t0 + (v1 - t1) + (v2 - v1) + (v3 - v2) + fuseMs);
  phases.recipeHttp.push(t2 - r1);
  phases.gunzip.push(t3 - t2);
  phases.sha256.push(t4 - t3);
  phases.jsonParse.push(t5 - t4);
  phases.decodeRecipe.push(t6 - t5);
  phases.unionBuild.push(t7 - t6);
  phases.fuseMount.push(fuseMs);
  // The fallback in sequence: image, recipes (HTTP + gunzip + decode), build, mount.
  phases.total.push(t1 - t0 + (t2 - r1) + (t3 - t2) + (t6 - t5) + (t7 - t6) + fuseMs);
}
const out = {
  ref,
  reps,
  recipeBytes: sizes,
  firstMs: Object.fromEntries(Object.entries(phases).map(([k, v]) => [k, v[0]])),
  medianMs: Object.fromEntries(Object.entries(phases).map(([k, v]) => [k, median(v)])),
};
process.stdout.write(`${JSON.stringify(out)}\n`);
