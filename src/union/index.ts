/** The union of an image's layers as one tree: see view.ts for the semantics. */
export {
  ROOT_INO,
  statMode,
  UnionView,
  type BuildOptions,
  type DirEntry,
  type LookupMode,
  type NodeAttr,
  type NodeType,
  type Resolved,
  type UnionStats,
} from './view.js';
export { IMPLICIT_DIR_MODE, IMPLICIT_DIR_MTIME, MAX_LAYERS } from './nodes.js';
