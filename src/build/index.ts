/**
 * The image builder's public surface (re-exported by src/index.ts): build() and its types. See
 * builder.ts for what a build does and manifest-source.ts for the manifest format.
 */
export { build, type BuildOptions, type BuildSummary, type BuildProgress, type BuildPhase } from './builder.js';
export { detectSource, type SourceKind } from './detect.js';
