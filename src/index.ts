/**
 * ext4ts: the public entry point. Everything a user imports comes from here.
 */
export {
  Ext4, FileHandle, type OpenOptions, type FsInfo, type InodeLayout, type OpenFlags, type FileOpenOptions,
  type AioContext, type AioContextOptions, type AioRequest, type Iocb, type IoEvent, type WriteFileOptions,
} from './api/ext4.js';
export { Stats, Dirent, type Timespec, type FileType } from './api/stats.js';
export { Corrupt, BadCrc, Incompatible, IoError, PosixError, Ext4Error, isExt4Error } from './util/errors.js';
export { Ext4Bug } from './util/assert.js';
export type { BlockDevice } from './blockdev/block-device.js';
export { FileDevice } from './blockdev/file-device.js';
export { MemDevice } from './blockdev/mem-device.js';
export { extract, badName, symlinkStaysInside, ExtractRefused, type ExtractOptions, type ExtractSummary, type ExtractWarning } from './api/extract.js';
export { dataRuns } from './api/ext4.js';
// Names that are not UTF-8: their strings in the API, and those strings as host paths.
export { decodeName, encodeUtf8, hostFsPath } from './util/bytes.js';
export {
  mkfs, seededRandom, cryptoRandom, fixedClock, systemClock, type MkfsOptions, type MkfsTargetOptions, type MkfsResult,
  type Random, type Clock, type ClockTime,
} from './api/mkfs.js';
export { build, type BuildOptions, type BuildSummary, type BuildProgress, type BuildPhase } from './build/index.js';
