/** Image reconstruction (pure: layers in, plans out). See README.md in this folder. */
export { LayerCatalog, type CatalogLayer, type Similar } from './catalog.js';
export { finalDirectories, orderingEdges, type OrderEdge } from './commutativity.js';
export {
  BYTES_PER_COST_UNIT,
  checkCostParams,
  DEFAULT_COST,
  operationCost,
  PAPER_COST_MODEL,
  parseCostModel,
  weightedCost,
  type CostModelFile,
  type CostParams,
} from './cost.js';
export { goira, unitRanks, DEFAULT_GOIRA, type GoiraOptions, type GoiraResult } from './goira.js';
export {
  directoryLayerEntries,
  edgeViolation,
  emitPlan,
  emitPlanLayer,
  identityPlan,
  modelImage,
  planViolation,
  positions,
  topologicalUnits,
  type EmittedLayer,
  type ImageModel,
  type Plan,
} from './plan.js';
export {
  againstCatalog,
  ALGORITHMS,
  finishPlan,
  reconstructImage,
  reconstructOffline,
  type Algorithm,
  type ImagePlan,
  type PlannedLayer,
  type ReconstructOptions,
} from './reconstruct.js';
export { keysSetHash, entrySetHash, sameEntrySet } from './set-hash.js';
export { DEFAULT_SOIRA, soira, type SoiraOptions } from './soira.js';
export { emitLayer, splitUnits, withoutOverlayXattrs, type Unit } from './units.js';
export { checkValidity, viewRows, type Validity } from './validity.js';
