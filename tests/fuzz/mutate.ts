/**
 * Seeded image mutation for the read-path fuzzer (STYLE.md §11, §13). A case is a plan: the
 * edits one seed makes to one pristine image (bit flips, overwrites of whole fields with
 * interesting values, random runs, zeroed and copied structures, truncation), aimed mostly at
 * metadata found by scan.ts, plus whether checksums are recomputed afterwards so that the
 * validators behind them run too. A plan is plain data: it is printed on failure and the same
 * (image, seed) always yields the same plan, so every failure replays.
 *
 * Field edits use the format layer's own field tables (`Struct.FIELDS`, `offsetOf`) so that no
 * byte offset of an on-disk structure is written here (STYLE.md §2).
 */
import { Prng } from './prng.js';
import type { ImageMeta, Region, RegionKind } from './scan.js';
import { defineStruct, u32, type FieldDef, type FieldTable } from '../../src/format/struct.js';
import { SuperBlock, setSuperblockCsum, SUPERBLOCK_OFFSET } from '../../src/format/superblock.js';
import { GroupDescRaw, GroupDesc, setGroupDescCsum } from '../../src/format/group-desc.js';
import { Inode, setInodeCsum, INODE_VIEW_SIZE, EXT4_GOOD_OLD_INODE_SIZE } from '../../src/format/inode.js';
import { ExtentHeader, Extent, ExtentIdx, setExtentBlockCsum, EXT_ENTRY_SIZE } from '../../src/format/extent.js';
import {
  DirEntry2, DirEntryTail, DIRENT_TAIL_SIZE, dirEntryMinRecLen, hasDirTail, setDirBlockCsum,
} from '../../src/format/dirent.js';
import {
  DxRootInfo, DxCountLimit, DxEntryView, DX_ROOT_ENTRIES_OFF, DX_NODE_ENTRIES_OFF, setDxCsum,
} from '../../src/format/htree.js';
import {
  XattrHeader, XattrIbodyHeader, XattrEntryView, EXT4_XATTR_MAGIC, xattrEntryLen, setXattrBlockCsum,
} from '../../src/format/xattr.js';

/** One write into the image: `data` replaces the bytes at `offset`. */
export interface Edit {
  offset: number;
  data: number[];
  /** What was hit and how, for the replay report. */
  what: string;
}

/** Everything one case does, derived from (image, seed) alone. */
export interface CasePlan {
  image: string;
  seed: number;
  edits: Edit[];
  /** The device is cut to this many bytes (after the edits and fix-ups). */
  truncateTo?: number;
  /** Recompute the checksums of every structure an edit touched. */
  fixCsums: boolean;
  /** Open with noRecovery (otherwise an image that needs recovery is refused with EROFS). */
  noRecovery: boolean;
  /** Also extract the whole tree to a temporary host directory. */
  extract: boolean;
  /** Extract with `strict` (the first skipped entry fails the extraction). */
  strictExtract: boolean;
}

/** Tunables of planning (the harness decides how often to extract, which costs syscalls). */
export interface PlanOptions {
  /** Probability that a case also extracts. */
  extractChance: number;
}

type StructLike = { readonly FIELDS: FieldTable; readonly STRUCT_NAME: string; readonly SIZE: number };

/** A le32 block pointer of an indirect block (block-map.ts reads these with a DataView). */
const BlockPtr = defineStruct('indirect_block_ptr', 4, { ptr: u32(0x0) });

/** A place where a structure with a known field table sits, and how far its fields may reach. */
interface FieldTarget {
  base: number;
  table: StructLike;
  /** Bytes from `base` that belong to this structure (fields past it are not used). */
  limit: number;
  label: string;
}

/** How often each region kind is aimed at (only kinds the image has are used). */
const KIND_WEIGHTS: Readonly<Record<RegionKind, number>> = {
  superblock: 10, gdt: 8, inode: 26, extent: 10, dir: 14, dxroot: 8, dxnode: 5, xattr: 8,
  indirect: 8, symlink: 2, bitmap: 1, data: 1,
};

type OpKind = 'field' | 'flip' | 'byte' | 'run' | 'zero' | 'copy' | 'anywhere' | 'truncate';
const OP_WEIGHTS: Readonly<Record<OpKind, number>> = {
  field: 38, flip: 18, byte: 12, run: 5, zero: 8, copy: 5, anywhere: 4, truncate: 6,
};

const regionIndex = new WeakMap<ImageMeta, Map<RegionKind, Region[]>>();

/** The regions of `meta` grouped by kind (computed once per image). */
function regionsByKind(meta: ImageMeta): Map<RegionKind, Region[]> {
  let idx = regionIndex.get(meta);
  if (idx === undefined) {
    idx = new Map();
    for (const r of meta.regions) {
      const list = idx.get(r.kind) ?? [];
      list.push(r);
      idx.set(r.kind, list);
    }
    regionIndex.set(meta, idx);
  }
  return idx;
}

/**
 * Plans case `seed` on pristine image `pristine` (described by `meta`). Deterministic: the
 * same arguments give the same plan.
 */
export function planCase(meta: ImageMeta, pristine: Uint8Array, seed: number, opts: PlanOptions): CasePlan {
  const rng = new Prng(seed);
  const r = rng.u32() / 0x1_0000_0000;
  const nOps = r < 0.55 ? 1 : r < 0.85 ? rng.range(2, 3) : rng.range(4, 12);
  const edits: Edit[] = [];
  let truncateTo: number | undefined;
  // Several edits to one structure get past checks that a single edit trips one at a time.
  const focus = nOps > 1 && rng.chance(0.4) ? pickRegion(rng, meta) : undefined;
  for (let i = 0; i < nOps; i++) {
    const op = rng.weighted(OP_WEIGHTS);
    if (op === 'truncate') {
      truncateTo = pickTruncation(rng, meta);
      continue;
    }
    const region = focus ?? pickRegion(rng, meta);
    const e = planEdit(rng, op, region, meta, pristine);
    if (e !== undefined) edits.push(e);
  }
  const hasCsums = meta.metadataCsum || meta.gdCsum.kind !== 'none';
  return {
    image: meta.name,
    seed,
    edits,
    ...(truncateTo !== undefined ? { truncateTo } : {}),
    fixCsums: hasCsums && rng.chance(0.6),
    noRecovery: rng.chance(0.9),
    extract: rng.chance(opts.extractChance),
    strictExtract: rng.chance(0.2),
  };
}

function pickRegion(rng: Prng, meta: ImageMeta): Region {
  const idx = regionsByKind(meta);
  const weights: Partial<Record<RegionKind, number>> = {};
  for (const [k, list] of idx) if (list.length > 0) weights[k] = KIND_WEIGHTS[k];
  return rng.pick(idx.get(rng.weighted(weights)) ?? meta.regions);
}

/** A truncation length: anywhere, at a block boundary, or just inside some structure. */
function pickTruncation(rng: Prng, meta: ImageMeta): number {
  const size = meta.sizeBytes;
  switch (rng.below(4)) {
    case 0: return rng.below(size);
    case 1: return rng.below(Math.ceil(size / meta.blockSize)) * meta.blockSize;
    case 2: {
      const reg = rng.pick(meta.regions);
      return Math.min(size - 1, reg.offset + rng.below(reg.len));
    }
    default: return Math.max(0, size - rng.range(1, 8) * 512);
  }
}

function planEdit(rng: Prng, op: Exclude<OpKind, 'truncate'>, region: Region, meta: ImageMeta, pristine: Uint8Array): Edit | undefined {
  const where = regionLabel(region);
  switch (op) {
    case 'field': {
      if (region.kind === 'dir' && rng.chance(0.35)) return nameEdit(rng, region, meta, pristine, where);
      const targets = fieldTargets(region, meta, pristine);
      if (targets.length === 0) return planEdit(rng, 'byte', region, meta, pristine);
      return fieldEdit(rng, rng.pick(targets), meta, pristine, where);
    }
    case 'flip': {
      const off = region.offset + rng.below(region.len);
      const old = byteAt(pristine, off);
      let mask = 0;
      const bits = rng.range(1, 3);
      for (let i = 0; i < bits; i++) mask |= 1 << rng.below(8);
      return { offset: off, data: [old ^ mask], what: `${where}: flip mask 0x${hex(mask)} at +${off - region.offset}` };
    }
    case 'byte': {
      const off = region.offset + rng.below(region.len);
      const v = interesting(rng, 1, byteAt(pristine, off), meta);
      return { offset: off, data: [v], what: `${where}: byte at +${off - region.offset} := 0x${hex(v)}` };
    }
    case 'run': {
      const len = rng.range(2, 32);
      const off = region.offset + rng.below(Math.max(1, region.len - len));
      const data = Array.from({ length: len }, () => rng.below(256));
      return { offset: off, data, what: `${where}: ${len} random bytes at +${off - region.offset}` };
    }
    case 'zero': {
      const whole = region.len < meta.blockSize && rng.chance(0.3);
      const offset = whole ? region.block * meta.blockSize : region.offset;
      const len = whole ? meta.blockSize : region.len;
      return { offset, data: new Array<number>(len).fill(rng.chance(0.85) ? 0 : 0xff), what: `${where}: ${whole ? 'whole block' : 'structure'} filled` };
    }
    case 'copy': {
      const same = meta.regions.filter((x) => x.len === region.len && x.offset !== region.offset && (x.kind === region.kind || rng.chance(0.1)));
      if (same.length === 0) return planEdit(rng, 'flip', region, meta, pristine);
      const src = rng.pick(same);
      return { offset: region.offset, data: [...pristine.subarray(src.offset, src.offset + src.len)], what: `${where}: overwritten with a copy of ${regionLabel(src)}` };
    }
    case 'anywhere': {
      const off = rng.below(meta.sizeBytes);
      const mask = 1 << rng.below(8);
      return { offset: off, data: [byteAt(pristine, off) ^ mask], what: `byte ${off} (anywhere): flip mask 0x${hex(mask)}` };
    }
  }
}

/**
 * Changes the name of one entry of a directory block: a byte that is '/', NUL, '.', or not
 * UTF-8; the name turned into '.' or '..'; the name of another entry copied (a duplicate); or
 * name_len at its extremes. These are what extract's name checks and the lookups must survive.
 */
function nameEdit(rng: Prng, region: Region, meta: ImageMeta, img: Uint8Array, where: string): Edit | undefined {
  const offs = dirEntryOffsets(img, region.offset, meta.blockSize).filter((o) => new DirEntry2(img, region.offset + o).inode !== 0);
  if (offs.length === 0) return undefined;
  const off = rng.pick(offs);
  const e = new DirEntry2(img, region.offset + off);
  const lenAt = region.offset + off + DirEntry2.offsetOf('name_len');
  const nameAt = region.offset + off + DirEntry2.SIZE;
  const room = e.rec_len - DirEntry2.SIZE;
  const label = `${where}: name of the entry at +${off}`;
  switch (rng.below(5)) {
    case 0: {
      const v = rng.pick([0x2f, 0x00, 0x2e, 0xff, 0xc3, 0x80]);
      const at = nameAt + rng.below(Math.max(1, e.name_len));
      return { offset: at, data: [v], what: `${label}: byte ${at - nameAt} := 0x${hex(v)}` };
    }
    case 1: {
      const dots = rng.chance(0.5) ? [0x2e] : [0x2e, 0x2e];
      return { offset: lenAt, data: [dots.length, e.file_type, ...dots], what: `${label}: renamed to '${'.'.repeat(dots.length)}'` };
    }
    case 2: {
      const other = rng.pick(offs);
      const o = new DirEntry2(img, region.offset + other);
      if (o.name_len > room) return undefined;
      const name = [...img.subarray(region.offset + other + DirEntry2.SIZE, region.offset + other + DirEntry2.SIZE + o.name_len)];
      return { offset: lenAt, data: [o.name_len, e.file_type, ...name], what: `${label}: renamed like the entry at +${other}` };
    }
    case 3: return { offset: lenAt, data: [0], what: `${label}: name_len := 0` };
    default: {
      const n = rng.pick([255, Math.max(0, room), Math.max(0, room + 1), e.name_len + 1]) & 0xff;
      return { offset: lenAt, data: [n], what: `${label}: name_len ${e.name_len} -> ${n}` };
    }
  }
}

/** The structures with known field tables inside a region, read from the pristine bytes. */
function fieldTargets(region: Region, meta: ImageMeta, img: Uint8Array): FieldTarget[] {
  const at = (base: number, table: StructLike, label: string, limit = table.SIZE): FieldTarget => ({ base, table, limit, label });
  const o = region.offset;
  const bs = meta.blockSize;
  switch (region.kind) {
    case 'superblock': return [at(o, SuperBlock, 'superblock')];
    case 'gdt': return [at(o, GroupDescRaw, `group ${region.group} descriptor`, meta.descSize)];
    case 'inode': return inodeTargets(region, meta, img);
    case 'extent': return extentNodeTargets(img, o, bs, 'extent block');
    case 'dir': {
      const out = dirEntryOffsets(img, o, bs).map((e) => at(o + e, DirEntry2, `dirent at +${e}`));
      if (meta.metadataCsum) out.push(at(o + bs - DIRENT_TAIL_SIZE, DirEntryTail, 'dirent tail'));
      return out;
    }
    case 'dxroot': {
      const dotdot = dirEntryMinRecLen(1);
      const info = DX_ROOT_ENTRIES_OFF - DxRootInfo.SIZE;
      return [
        at(o, DirEntry2, "dx_root '.'"), at(o + dotdot, DirEntry2, "dx_root '..'"), at(o + info, DxRootInfo, 'dx_root_info'),
        ...dxEntryTargets(img, o, DX_ROOT_ENTRIES_OFF, 'dx_root'),
      ];
    }
    case 'dxnode': return [at(o, DirEntry2, 'dx_node fake entry'), ...dxEntryTargets(img, o, DX_NODE_ENTRIES_OFF, 'dx_node')];
    case 'xattr': return [at(o, XattrHeader, 'xattr header'), ...xattrEntryTargets(img, o + XattrHeader.SIZE, o + bs, 'xattr block')];
    case 'indirect': {
      const out: FieldTarget[] = [];
      for (let i = 0; i < bs / BlockPtr.SIZE; i++) {
        const p = new BlockPtr(img, o + i * BlockPtr.SIZE);
        if (p.ptr !== 0 || out.length === 0 || i % 64 === 0) out.push(at(o + i * BlockPtr.SIZE, BlockPtr, `pointer ${i}`));
      }
      return out;
    }
    default: return [];
  }
}

function inodeTargets(region: Region, meta: ImageMeta, img: Uint8Array): FieldTarget[] {
  const o = region.offset;
  const isz = meta.inodeSize;
  const out: FieldTarget[] = [{ base: o, table: Inode, limit: isz, label: 'inode' }];
  if (region.extentRoot) {
    // The extent root lives in i_block: weight it like the rest of the record.
    const root = extentNodeTargets(img, o + Inode.offsetOf('i_block'), ExtentHeader.SIZE + 4 * EXT_ENTRY_SIZE, 'i_block extent root');
    for (let i = 0; i < 3; i++) out.push(...root);
  }
  if (isz > EXT4_GOOD_OLD_INODE_SIZE && o + INODE_VIEW_SIZE <= img.length) {
    const extra = new Inode(img, o).i_extra_isize;
    const start = o + EXT4_GOOD_OLD_INODE_SIZE + extra;
    if (start + XattrIbodyHeader.SIZE <= o + isz && new XattrIbodyHeader(img, start).h_magic === EXT4_XATTR_MAGIC) {
      out.push({ base: start, table: XattrIbodyHeader, limit: XattrIbodyHeader.SIZE, label: 'in-inode xattr magic' });
      out.push(...xattrEntryTargets(img, start + XattrIbodyHeader.SIZE, o + isz, 'in-inode xattr'));
    }
  }
  return out;
}

/** The header and the used entries (+1) of an extent node of `len` bytes at `base`. */
function extentNodeTargets(img: Uint8Array, base: number, len: number, label: string): FieldTarget[] {
  const h = new ExtentHeader(img, base);
  const out: FieldTarget[] = [{ base, table: ExtentHeader, limit: ExtentHeader.SIZE, label: `${label} header` }];
  const cap = Math.floor((len - ExtentHeader.SIZE) / EXT_ENTRY_SIZE);
  const entry = h.eh_depth > 0 ? ExtentIdx : Extent;
  for (let k = 0; k < Math.min(cap, h.eh_entries + 1); k++) {
    out.push({ base: base + ExtentHeader.SIZE + k * EXT_ENTRY_SIZE, table: entry, limit: entry.SIZE, label: `${label} entry ${k}` });
  }
  return out;
}

/** Offsets of the entries of a directory block, following rec_len (bounded, pristine data). */
function dirEntryOffsets(img: Uint8Array, base: number, bs: number): number[] {
  const out: number[] = [];
  for (let off = 0; off + DirEntry2.SIZE <= bs && out.length < 512;) {
    out.push(off);
    const rec = new DirEntry2(img, base + off).rec_len;
    if (rec < DirEntry2.SIZE) break;
    off += rec;
  }
  return out;
}

/** count/limit and the used entries (+1) of a dx_root or dx_node. */
function dxEntryTargets(img: Uint8Array, block: number, entriesOff: number, label: string): FieldTarget[] {
  const cl = new DxCountLimit(img, block + entriesOff);
  const out: FieldTarget[] = [{ base: block + entriesOff, table: DxCountLimit, limit: DxCountLimit.SIZE, label: `${label} count/limit` }];
  for (let k = 1; k <= Math.min(cl.count, cl.limit, 64); k++) {
    out.push({ base: block + entriesOff + k * DxEntryView.SIZE, table: DxEntryView, limit: DxEntryView.SIZE, label: `${label} entry ${k}` });
  }
  return out;
}

/** The entries of an xattr area from `start` to `end`, walked like the kernel (pristine data). */
function xattrEntryTargets(img: Uint8Array, start: number, end: number, label: string): FieldTarget[] {
  const out: FieldTarget[] = [];
  for (let off = start; off + XattrEntryView.SIZE <= end && out.length < 64;) {
    const e = new XattrEntryView(img, off);
    if (e.e_name_len === 0 && e.e_name_index === 0 && e.e_value_offs === 0) break;
    out.push({ base: off, table: XattrEntryView, limit: XattrEntryView.SIZE, label: `${label} entry at +${off - start}` });
    off += xattrEntryLen(e.e_name_len);
  }
  return out;
}

/** Width in bytes and byte order of a scalar field type (jbd2 structures are big-endian). */
function scalarShape(type: Exclude<FieldDef['type'], 'bytes'>): { width: number; bigEndian: boolean } {
  switch (type) {
    case 'u8': return { width: 1, bigEndian: false };
    case 'u16': return { width: 2, bigEndian: false };
    case 'u32': return { width: 4, bigEndian: false };
    case 'u64': return { width: 8, bigEndian: false };
    case 'be16': return { width: 2, bigEndian: true };
    case 'be32': return { width: 4, bigEndian: true };
  }
}

/**
 * Fields later code sizes, loops or seeks from: hit most of the time, since a random field of a
 * large structure is usually one the read path never looks at. Names missing from a table are
 * ignored, so the list survives format changes.
 */
const KEY_FIELDS: Readonly<Record<string, readonly string[]>> = {
  ext4_super_block: [
    's_inodes_count', 's_blocks_count_lo', 's_blocks_count_hi', 's_first_data_block', 's_log_block_size',
    's_log_cluster_size', 's_blocks_per_group', 's_inodes_per_group', 's_magic', 's_state', 's_rev_level',
    's_first_ino', 's_inode_size', 's_feature_compat', 's_feature_incompat', 's_feature_ro_compat', 's_desc_size',
    's_log_groups_per_flex', 's_checksum_type', 's_first_meta_bg', 's_def_hash_version', 's_flags', 's_hash_seed',
    's_backup_bgs', 's_journal_inum', 's_min_extra_isize', 's_want_extra_isize', 's_csum_seed', 's_uuid',
    's_reserved_gdt_blocks', 's_orphan_file_inum',
  ],
  ext4_group_desc: [
    'bg_block_bitmap_lo', 'bg_inode_bitmap_lo', 'bg_inode_table_lo', 'bg_flags', 'bg_itable_unused_lo',
    'bg_block_bitmap_hi', 'bg_inode_bitmap_hi', 'bg_inode_table_hi', 'bg_checksum',
  ],
  ext4_inode: [
    'i_mode', 'i_size_lo', 'i_size_high', 'i_links_count', 'i_blocks_lo', 'i_flags', 'i_block', 'i_file_acl_lo',
    'l_i_file_acl_high', 'i_extra_isize', 'i_dtime', 'i_generation', 'l_i_blocks_high',
  ],
};

/** Overwrites one field of `t` with an interesting value of the field's width. */
function fieldEdit(rng: Prng, t: FieldTarget, meta: ImageMeta, img: Uint8Array, where: string): Edit | undefined {
  const all = Object.entries(t.table.FIELDS).filter(([, f]) => f.off + fieldBytes(f) <= t.limit && t.base + f.off + fieldBytes(f) <= img.length);
  const keys = KEY_FIELDS[t.table.STRUCT_NAME] ?? [];
  const key = all.filter(([n]) => keys.includes(n));
  const fields = key.length > 0 && rng.chance(0.75) ? key : all;
  if (fields.length === 0) return undefined;
  const [name, f] = rng.pick(fields);
  let off = t.base + f.off;
  let width: number;
  let bigEndian = false;
  if (f.type === 'bytes') {
    // Inside a byte array (i_block, uuids, names): a word at an aligned spot, or one byte.
    width = f.len >= 4 && rng.chance(0.6) ? 4 : 1;
    off += width === 4 ? 4 * rng.below(Math.floor(f.len / 4)) : rng.below(f.len);
  } else if (f.type === 'u64') {
    width = 4;
    off += rng.chance(0.5) ? 0 : 4;
  } else {
    ({ width, bigEndian } = scalarShape(f.type));
  }
  const old = readInt(img, off, width, bigEndian);
  const v = interesting(rng, width, old, meta);
  const data = leBytes(v, width);
  return {
    offset: off, data: bigEndian ? data.reverse() : data,
    what: `${where}: ${t.label} ${t.table.STRUCT_NAME}.${name}${f.type === 'bytes' || f.type === 'u64' ? `[+${off - t.base - f.off}]` : ''} 0x${hex(old)} -> 0x${hex(v)}`,
  };
}

function fieldBytes(f: FieldDef): number {
  return f.type === 'bytes' ? f.len : scalarShape(f.type).width;
}

/**
 * An interesting value for a field of `width` bytes that held `old`: boundaries (0, 1, max,
 * sign bits), sizes near the block size, block and inode numbers at and past the ends, other
 * metadata blocks (to make structures point at each other: cycles, shared blocks), and small
 * changes of the old value.
 */
function interesting(rng: Prng, width: number, old: number, meta: ImageMeta): number {
  const max = width === 1 ? 0xff : width === 2 ? 0xffff : 0xffffffff;
  const bs = meta.blockSize;
  const vals = [
    0, 1, 2, 3, 4, 7, 8, 12, 16, 0x2e, 0x2f, 0x7f, 0x80, 0xff, max, max - 1, Math.floor(max / 2), Math.floor(max / 2) + 1,
    old + 1, old - 1, old ^ 1, old * 2, Math.floor(old / 2), old ^ (1 << rng.below(width * 8)) >>> 0, rng.u32(),
  ];
  if (width >= 2) vals.push(bs, bs - 12, bs - 8, bs + 4, bs / 2, 0x100, 0x1000, 0x7fff, 0x8000, 0xffff, 256, old + 4, old - 4, old + 12);
  if (width >= 4) {
    vals.push(
      meta.blocksCount - 1, meta.blocksCount, meta.blocksCount + 1, meta.inodesCount, meta.inodesCount + 1,
      meta.firstDataBlock, 0x10000, 0x1000000, 0x7fffffff, 0x80000000, 0xffffffff,
    );
    if (meta.metaBlocks.length > 0) vals.push(rng.pick(meta.metaBlocks), rng.pick(meta.metaBlocks));
    if (meta.inos.length > 0) vals.push(rng.pick(meta.inos));
  }
  const v = rng.pick(vals);
  const mod = max + 1;
  return ((v % mod) + mod) % mod;
}

function readInt(b: Uint8Array, off: number, width: number, bigEndian: boolean): number {
  let v = 0;
  for (let i = 0; i < width; i++) v = v * 256 + byteAt(b, off + (bigEndian ? i : width - 1 - i));
  return v;
}

function leBytes(v: number, width: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < width; i++) out.push(Math.floor(v / 256 ** i) % 256);
  return out;
}

function byteAt(b: Uint8Array, off: number): number {
  return b[off] ?? 0;
}

function hex(n: number): string {
  return n.toString(16);
}

function regionLabel(r: Region): string {
  const owner = r.ino !== undefined ? ` of inode ${r.ino}` : '';
  switch (r.kind) {
    case 'superblock': return 'superblock';
    case 'gdt': return `group descriptor ${r.group} (block ${r.block})`;
    case 'inode': return `inode ${r.ino} record (block ${r.block})`;
    default: return `${r.kind} block ${r.block}${owner}`;
  }
}

/** The mutated image of one case: `bytes` (possibly truncated) and how to restore the original. */
export interface Applied {
  bytes: Uint8Array;
  /** What the checksum fix-ups did (for the replay report). */
  fixups: string[];
  /** Restores every byte the plan changed (in-place application only). */
  undo(): void;
}

/**
 * Applies `plan` to `image` in place (the pristine bytes), so a run needs no copy per case;
 * `undo()` must be called before the next case. The fix-ups run after all edits and before
 * truncation.
 */
export function applyInPlace(image: Uint8Array, meta: ImageMeta, plan: CasePlan): Applied {
  const saved: { offset: number; bytes: Uint8Array }[] = [];
  const save = (offset: number, len: number): void => {
    const end = Math.min(image.length, offset + len);
    if (offset < end) saved.push({ offset, bytes: image.slice(offset, end) });
  };
  const touched: { offset: number; end: number }[] = [];
  for (const e of plan.edits) {
    const n = Math.min(e.data.length, image.length - e.offset);
    if (n <= 0) continue;
    save(e.offset, n);
    image.set(e.data.slice(0, n), e.offset);
    touched.push({ offset: e.offset, end: e.offset + n });
  }
  const fixups = plan.fixCsums ? fixChecksums(image, meta, touched, save) : [];
  const bytes = plan.truncateTo !== undefined ? image.subarray(0, plan.truncateTo) : image;
  return {
    bytes,
    fixups,
    undo: () => {
      for (let i = saved.length - 1; i >= 0; i--) {
        // OK to assert: i is inside the array.
        const s = saved[i] as { offset: number; bytes: Uint8Array };
        image.set(s.bytes, s.offset);
      }
    },
  };
}

/** A mutated copy of `pristine` for case `seed` (the pristine bytes are not changed). */
export function mutatedCopy(pristine: Uint8Array, meta: ImageMeta, seed: number, opts: PlanOptions = { extractChance: 0 }): { plan: CasePlan; bytes: Uint8Array; fixups: string[] } {
  const plan = planCase(meta, pristine, seed, opts);
  const copy = pristine.slice();
  const applied = applyInPlace(copy, meta, plan);
  return { plan, bytes: applied.bytes, fixups: applied.fixups };
}

/**
 * Recomputes the checksum of every structure that overlaps a touched range, with the format
 * layer's own set*Csum functions. A structure the edit made unparseable for its setter (say, an
 * eh_max that puts the tail outside the block) is left as it is and reported as skipped.
 */
function fixChecksums(
  image: Uint8Array, meta: ImageMeta, touched: readonly { offset: number; end: number }[],
  save: (offset: number, len: number) => void,
): string[] {
  const out: string[] = [];
  const hits = meta.regions.filter((r) => touched.some((t) => t.offset < r.offset + r.len && r.offset < t.end));
  const csum = meta.metadataCsum;
  for (const r of hits) {
    if (r.offset + r.len > image.length) continue;
    const block = image.subarray(r.offset, r.offset + r.len);
    const label = regionLabel(r);
    try {
      save(r.offset, r.len);
      if (fixOne(r, block, image, meta, csum)) out.push(`csum ${label}`);
    } catch (e) {
      out.push(`csum ${label} skipped (${(e as Error).message})`);
    }
  }
  return out;
}

/** Recomputes one structure's checksum; returns false when it has none on this filesystem. */
function fixOne(r: Region, block: Uint8Array, image: Uint8Array, meta: ImageMeta, csum: boolean): boolean {
  const seed = r.inodeSeed ?? 0;
  switch (r.kind) {
    case 'superblock':
      if (!csum) return false;
      setSuperblockCsum(new SuperBlock(image, SUPERBLOCK_OFFSET));
      return true;
    case 'gdt':
      if (meta.gdCsum.kind === 'none' || r.group === undefined) return false;
      setGroupDescCsum(new GroupDesc(image, r.offset, meta.descSize), r.group, meta.gdCsum);
      return true;
    case 'inode': {
      if (!csum || r.ino === undefined || block.every((b) => b === 0)) return false;
      const copy = new Uint8Array(Math.max(meta.inodeSize, INODE_VIEW_SIZE));
      copy.set(block);
      setInodeCsum(new Inode(copy, 0), copy.subarray(0, meta.inodeSize), r.ino, meta.csumSeed);
      block.set(copy.subarray(0, meta.inodeSize));
      return true;
    }
    case 'extent':
      if (!csum) return false;
      setExtentBlockCsum(block, seed);
      return true;
    case 'dir':
      if (!csum || !hasDirTail(block)) return false;
      setDirBlockCsum(seed, block);
      return true;
    case 'dxroot':
    case 'dxnode':
      if (!csum) return false;
      setDxCsum(block, r.kind === 'dxroot' ? DX_ROOT_ENTRIES_OFF : DX_NODE_ENTRIES_OFF, seed);
      return true;
    case 'xattr':
      if (!csum) return false;
      setXattrBlockCsum(block, r.block, meta.csumSeed);
      return true;
    default:
      return false;
  }
}

/** A plan and its fix-ups as text, for failure reports. */
export function describePlan(plan: CasePlan, fixups: readonly string[] = []): string {
  const lines = [
    `image ${plan.image}, seed ${plan.seed}: ${plan.edits.length} edit(s)` +
      `${plan.truncateTo !== undefined ? `, truncated to ${plan.truncateTo} bytes` : ''}` +
      `${plan.fixCsums ? ', checksums recomputed' : ''}${plan.noRecovery ? ', noRecovery' : ''}` +
      `${plan.extract ? `, extract${plan.strictExtract ? ' (strict)' : ''}` : ''}`,
  ];
  for (const e of plan.edits) {
    const same = e.data.every((b) => b === e.data[0]);
    const data = e.data.length > 16 && same ? `fill 0x${hex(e.data[0] ?? 0)} x${e.data.length}` : e.data.map((b) => b.toString(16).padStart(2, '0')).join('');
    lines.push(`  @${e.offset} (0x${hex(e.offset)}) <- ${data.length > 80 ? data.slice(0, 80) + '…' : data}  ${e.what}`);
  }
  for (const f of fixups) lines.push(`  fix-up: ${f}`);
  return lines.join('\n');
}
