/**
 * Writing extended attributes (fs/ext4/xattr.c: ext4_xattr_set_handle, ext4_xattr_ibody_set,
 * ext4_xattr_block_set, ext4_xattr_release_block, ext4_xattr_block_cache_find/insert;
 * fs/ext4/acl.c: ext4_set_acl for the POSIX ACL names).
 *
 * Placement follows the kernel: a value goes into the in-inode area when it fits there
 * (EXT4_INODE_HAS_XATTR_SPACE: i_extra_isize != 0 and room for the magic and a terminator),
 * otherwise into the xattr block; an attribute that moves between the two is removed from
 * where it was. The in-inode area keeps its entries in insertion order with e_hash 0 (the
 * kernel hashes only block entries; e2fsck accepts 0 in-inode). The block keeps its entries
 * sorted by (name_index, name_len, name) — xattr_find_entry stops at the first greater entry,
 * so an unsorted block would hide attributes — with e_hash = ext4_xattr_hash_entry (the
 * unsigned-char variant the kernel writes since 6.2; e2fsck 1.47 accepts both) and h_hash =
 * ext4_xattr_rehash. Each change rebuilds the whole area with the format builders (values packed
 * from the end, the way the kernel keeps them compacted), then parses it back with the read-side
 * parsers and asserts the result equals what was meant.
 *
 * Blocks are shared like the kernel's mbcache does it: a per-mount map from h_hash to blocks
 * this module has read or written. Before a new block is allocated (or a block modified in
 * place is kept), an identical block (same entries, hashes and values, h_refcount below
 * EXT4_XATTR_REFCOUNT_MAX) is reused by bumping its h_refcount. A block with h_refcount > 1 is
 * never modified: it is copied to a new block (or to an identical shared one) and its count
 * dropped (copy-on-write). A block left without entries is released. Every inode referencing a
 * block counts it in i_blocks (the kernel's dquot_alloc_block per reference). Freeing an xattr
 * block anywhere else than through this module (releaseXattrBlock) would leave a stale cache
 * entry: xattr blocks must only be freed here.
 *
 * Limits: no ea_inode (a value that fits neither in-inode nor in the block is ENOSPC, as the
 * kernel answers without the feature), no inline-data attribute (system.data is refused with
 * EPERM and preserved as it is), no gnu.* names (index 10: the read side has no prefix for it
 * yet). Names: user., trusted., security. with 1..255 bytes after the prefix (EINVAL empty,
 * ERANGE longer), and the two POSIX ACL names, whose values are validated and converted to
 * ext4's on-disk ACL format; the mode-equivalence rules of posix_acl_update_mode (and i_mode,
 * i_ctime updates) are the caller's. The block checksum is stamped at once and again by the
 * buffer's finalizer at commit.
 */
import type { Ext4Super } from '../super.js';
import { type InodeInfo, writeInode, addInodeBlocks } from '../inode/inode.js';
import type { BlockAllocator } from '../alloc/allocator.js';
import type { MetaBuffer } from '../../cache/buffer-cache.js';
import {
  XattrHeader, XattrIbodyHeader, EXT4_XATTR_PAD, EXT4_XATTR_REFCOUNT_MAX, XATTR_PREFIXES,
  EXT4_XATTR_INDEX_USER, EXT4_XATTR_INDEX_TRUSTED, EXT4_XATTR_INDEX_SECURITY,
  EXT4_XATTR_INDEX_POSIX_ACL_ACCESS, EXT4_XATTR_INDEX_POSIX_ACL_DEFAULT,
  buildXattrBlock, buildXattrIbody, parseXattrBlock, parseXattrIbody, setXattrBlockCsum,
  compareXattrEntries, xattrSpaceNeeded, parsePosixAclXattr, encodeExt4Acl,
  type XattrInput, type XattrEntry, type XattrBlockCtx,
} from '../../format/xattr.js';
import { COMPAT } from '../../format/features.js';
import { EXT4_GOOD_OLD_INODE_SIZE, EXT4_HUGE_FILE_FL } from '../../format/inode.js';
import { Corrupt, Incompatible, PosixError } from '../../util/errors.js';
import { assert } from '../../util/assert.js';
import { encodeUtf8 } from '../../util/bytes.js';

/** setxattr(2) flags: XATTR_CREATE fails with EEXIST, XATTR_REPLACE with ENODATA. */
export interface SetXattrFlags {
  /** XATTR_CREATE: the attribute must not exist yet. */
  create?: boolean;
  /** XATTR_REPLACE: the attribute must exist. */
  replace?: boolean;
}

/** Longest name after the prefix (the kernel's strlen(name) > 255 check). */
const XATTR_NAME_LEN_MAX = 255;
/** Prefixes a caller may write, with their index (the kernel's user/trusted/security handlers). */
const WRITABLE_PREFIXES = [EXT4_XATTR_INDEX_USER, EXT4_XATTR_INDEX_TRUSTED, EXT4_XATTR_INDEX_SECURITY];
const ACL_INDEXES = [EXT4_XATTR_INDEX_POSIX_ACL_ACCESS, EXT4_XATTR_INDEX_POSIX_ACL_DEFAULT];

/** An attribute's identity on disk: the name index and the name bytes after the prefix. */
interface XattrKey {
  nameIndex: number;
  nameBytes: Uint8Array;
}

/** The inode's xattr block as found (entries copied out of the buffer). */
interface BlockState {
  /** Block number (i_file_acl). */
  nr: number;
  /** h_refcount when read. */
  refcount: number;
  /** h_hash when read (the cache key). */
  hash: number;
  /** Entries in block order, values copied. */
  entries: XattrInput[];
}

/** What ext4_xattr_ibody_find + ext4_xattr_block_find see. */
interface XattrState {
  /** In-inode entries in order, or undefined when the inode has no in-inode space. */
  ibody: XattrInput[] | undefined;
  /** Bytes of the in-inode area (0 without one). */
  ibodyBytes: number;
  block: BlockState | undefined;
}

/**
 * Sets attribute `name` to `value` (ext4_xattr_set_handle with a value): in-inode if it fits,
 * else in the block. `flags.create`/`flags.replace` give EEXIST/ENODATA. For the POSIX ACL names
 * `value` is in the xattr format (version 2) and is stored in ext4's format; an ACL without
 * entries removes the attribute. Writes the inode (the caller updates i_ctime).
 */
export async function setXattr(
  s: Ext4Super, inode: InodeInfo, alloc: BlockAllocator, name: string, value: Uint8Array, flags: SetXattrFlags = {},
): Promise<void> {
  assertWritable(s);
  const key = resolveName(name, 'setxattr');
  let stored = value;
  if (ACL_INDEXES.includes(key.nameIndex)) {
    checkAclTarget(inode, key, 'setxattr');
    const acl = parsePosixAclXattr(value, 'setxattr');
    // posix_acl_from_xattr gives NULL for an empty ACL: ext4_set_acl then removes it.
    if (acl.length === 0) return xattrSetHandle(s, inode, alloc, key, undefined, {});
    stored = encodeExt4Acl(acl);
  }
  return xattrSetHandle(s, inode, alloc, key, stored.slice(), flags);
}

/** Removes attribute `name` (ext4_xattr_set_handle without a value); ENODATA if absent. */
export async function removeXattr(s: Ext4Super, inode: InodeInfo, alloc: BlockAllocator, name: string): Promise<void> {
  assertWritable(s);
  const key = resolveName(name, 'removexattr');
  return xattrSetHandle(s, inode, alloc, key, undefined, { replace: true });
}

/**
 * Drops the inode's xattr block reference when the inode is deleted (ext4_xattr_delete_inode →
 * ext4_xattr_release_block): h_refcount is decremented, or the block freed at 1; i_file_acl
 * becomes 0, i_blocks loses the block, and the inode is written.
 */
export async function releaseXattrBlock(s: Ext4Super, inode: InodeInfo, alloc: BlockAllocator): Promise<void> {
  assertWritable(s);
  const blk = await loadBlock(s, inode);
  if (blk === undefined) return;
  checkInodeBlocks(s, inode, true);
  await releaseBlock(s, alloc, blk);
  setFileAcl(inode, 0);
  addInodeBlocks(s, inode, -1);
  await writeInode(s, inode);
}

function assertWritable(s: Ext4Super): void {
  assert(!s.readOnly, 'xattr change on a read-only mount');
}

/**
 * The handler that stores `name` the way the VFS and ext4's handlers match it: whole ACL names,
 * then the user/trusted/security prefixes. Undefined when none takes it (system.data included).
 */
function handlerOf(name: string): number | undefined {
  for (const idx of ACL_INDEXES) if (name === XATTR_PREFIXES[idx]) return idx;
  // OK: every WRITABLE_PREFIXES member has a prefix in XATTR_PREFIXES.
  return WRITABLE_PREFIXES.find((idx) => name.startsWith(XATTR_PREFIXES[idx]!));
}

/** True when ext4 has a handler for `name` (setxattr may still refuse its length or bytes). */
export function hasXattrHandler(name: string): boolean {
  return handlerOf(name) !== undefined;
}

/**
 * Maps a full name to its key (handlerOf). EINVAL for an empty name after the prefix (and a NUL,
 * which a C string cannot carry), ERANGE past 255 bytes, EPERM for system.data (the inline data
 * carrier), EOPNOTSUPP for any other name (no handler takes it).
 */
function resolveName(name: string, syscall: string): XattrKey {
  const idx = handlerOf(name);
  if (idx === undefined) {
    if (name === 'system.data') throw new PosixError('EPERM', syscall, undefined, 'system.data holds inline data');
    throw new PosixError('EOPNOTSUPP', syscall, undefined, `no handler for xattr name "${name}"`);
  }
  if (ACL_INDEXES.includes(idx)) return { nameIndex: idx, nameBytes: new Uint8Array(0) };
  // OK: handlerOf returns indexes with a prefix.
  const rest = name.slice(XATTR_PREFIXES[idx]!.length);
  if (rest.length === 0 || rest.includes('\0')) throw new PosixError('EINVAL', syscall, undefined, `bad xattr name "${name}"`);
  const nameBytes = encodeUtf8(rest);
  if (nameBytes.length > XATTR_NAME_LEN_MAX) {
    throw new PosixError('ERANGE', syscall, undefined, `xattr name of ${nameBytes.length} bytes after the prefix (limit ${XATTR_NAME_LEN_MAX})`);
  }
  return { nameIndex: idx, nameBytes };
}

/** set_posix_acl's checks: no ACLs on symlinks, default ACLs only on directories (EACCES). */
function checkAclTarget(inode: InodeInfo, key: XattrKey, syscall: string): void {
  if (inode.type === 'symlink') throw new PosixError('EOPNOTSUPP', syscall, undefined, 'symlinks have no ACLs');
  if (key.nameIndex === EXT4_XATTR_INDEX_POSIX_ACL_DEFAULT && inode.type !== 'dir') {
    throw new PosixError('EACCES', syscall, undefined, 'a default ACL needs a directory');
  }
}

/**
 * The core of ext4_xattr_set_handle: find the attribute in-inode, then in the block; apply the
 * flags; skip an unchanged value; place the new value in-inode if it fits, else in the block;
 * remove it from where it was. The block change (which may allocate and fail with ENOSPC) is
 * made before the in-inode one, so a failure changes nothing.
 */
async function xattrSetHandle(
  s: Ext4Super, inode: InodeInfo, alloc: BlockAllocator, key: XattrKey, value: Uint8Array | undefined, flags: SetXattrFlags,
): Promise<void> {
  const st = await xattrFind(s, inode);
  const iIdx = st.ibody === undefined ? -1 : findEntry(st.ibody, key);
  const bIdx = st.block === undefined ? -1 : findEntry(st.block.entries, key);
  const found = iIdx >= 0 || bIdx >= 0;
  const syscall = value === undefined ? 'removexattr' : 'setxattr';
  if (!found && flags.replace === true) throw new PosixError('ENODATA', syscall);
  if (found && flags.create === true) throw new PosixError('EEXIST', syscall);
  if (value === undefined) {
    if (!found) return;
    if (iIdx >= 0) writeIbody(inode, st, without(st.ibody, iIdx));
    else await blockSet(s, inode, alloc, st.block, without(st.block?.entries, bIdx));
  } else {
    if (iIdx >= 0 && sameValue(st.ibody?.[iIdx], value)) return;
    if (iIdx < 0 && bIdx >= 0 && sameValue(st.block?.entries[bIdx], value)) return;
    await placeValue(s, inode, alloc, st, { ...key, value }, iIdx, bIdx);
  }
  setXattrFeature(s);
  await writeInode(s, inode);
}

/**
 * ext4_xattr_ibody_set, and on ENOSPC ext4_xattr_block_set: the value goes in-inode when the
 * area can hold it (and leaves the block if it was there), else into the block (and leaves the
 * in-inode area). ENOSPC when neither can hold it.
 */
async function placeValue(
  s: Ext4Super, inode: InodeInfo, alloc: BlockAllocator, st: XattrState, entry: XattrInput, iIdx: number, bIdx: number,
): Promise<void> {
  if (st.ibody !== undefined) {
    const ibody = iIdx >= 0 ? st.ibody.map((e, i) => (i === iIdx ? entry : e)) : [...st.ibody, entry];
    if (XattrIbodyHeader.SIZE + xattrSpaceNeeded(ibody) <= st.ibodyBytes) {
      // The kernel searched the block only when the name was not in-inode.
      if (iIdx < 0 && bIdx >= 0) await blockSet(s, inode, alloc, st.block, without(st.block?.entries, bIdx));
      writeIbody(inode, st, ibody);
      return;
    }
  }
  const old = st.block?.entries ?? [];
  const block = bIdx >= 0 ? old.map((e, i) => (i === bIdx ? entry : e)) : [...old, entry].sort(compareXattrEntries);
  if (XattrHeader.SIZE + xattrSpaceNeeded(block) > s.blockSize) {
    throw new PosixError('ENOSPC', 'setxattr', undefined,
      `xattr of ${entry.value.length} bytes does not fit in inode ${inode.ino} or its xattr block (no ea_inode support)`);
  }
  await blockSet(s, inode, alloc, st.block, block);
  if (iIdx >= 0) writeIbody(inode, st, without(st.ibody, iIdx));
}

/** xattr_find_entry: the index of the entry with this key, or -1. */
function findEntry(entries: readonly XattrInput[], key: XattrKey): number {
  return entries.findIndex((e) => e.nameIndex === key.nameIndex && bytesEqual(e.nameBytes, key.nameBytes));
}

/** `entries` without element `idx` (which must exist). */
function without(entries: readonly XattrInput[] | undefined, idx: number): XattrInput[] {
  assert(entries !== undefined && idx >= 0 && idx < entries.length, () => `xattr entry ${idx} to remove`);
  return entries.filter((_, i) => i !== idx);
}

/** ext4_xattr_value_same. */
function sameValue(e: XattrInput | undefined, value: Uint8Array): boolean {
  return e !== undefined && bytesEqual(e.value, value);
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** ext4_xattr_update_super_block: the first xattr turns on the ext_attr feature. */
function setXattrFeature(s: Ext4Super): void {
  if ((s.sb.s_feature_compat & COMPAT.ext_attr) !== 0) return;
  s.sb.s_feature_compat = (s.sb.s_feature_compat | COMPAT.ext_attr) >>> 0;
  s.markSuperDirty();
}

/** ext4_xattr_ibody_find + ext4_xattr_block_find: both places, parsed and copied. */
async function xattrFind(s: Ext4Super, inode: InodeInfo): Promise<XattrState> {
  const area = ibodyArea(s, inode);
  const ibody = area === undefined ? undefined : parseXattrIbody(area, { ino: inode.ino }).map(copyEntry);
  return { ibody, ibodyBytes: area?.length ?? 0, block: await loadBlock(s, inode) };
}

/**
 * The in-inode area when the inode has one (EXT4_INODE_HAS_XATTR_SPACE: i_extra_isize != 0
 * and room after it for the magic and one terminator word), else undefined.
 */
function ibodyArea(s: Ext4Super, inode: InodeInfo): Uint8Array | undefined {
  if (s.inodeSize <= EXT4_GOOD_OLD_INODE_SIZE || inode.view.i_extra_isize === 0) return undefined;
  const area = inode.ibodyXattrArea;
  return area.length >= XattrIbodyHeader.SIZE + EXT4_XATTR_PAD ? area : undefined;
}

function copyEntry(e: XattrEntry): XattrInput {
  return { nameIndex: e.nameIndex, nameBytes: e.nameBytes.slice(), value: e.value.slice() };
}

/** The parse context of block `nr`, with the checksum when metadata_csum is on. */
function blockCtx(s: Ext4Super, nr: number, buf: MetaBuffer, ino?: number): XattrBlockCtx {
  const base: XattrBlockCtx = ino === undefined ? { blockNr: nr, skipCsum: buf.verified } : { blockNr: nr, ino, skipCsum: buf.verified };
  return s.features.metadataCsum ? { ...base, csumSeed: s.csumSeed } : base;
}

/**
 * Reads and checks the inode's xattr block (ext4_xattr_block_find → ext4_xattr_check_block),
 * and enters it in the sharing cache as the kernel does on every read. Undefined without one.
 */
async function loadBlock(s: Ext4Super, inode: InodeInfo): Promise<BlockState | undefined> {
  const nr = inode.fileAcl;
  if (nr === 0) return undefined;
  if (nr < s.firstDataBlock || nr >= s.blocksCount) {
    throw new Corrupt('inode', `xattr block ${nr} outside the filesystem`, { ino: inode.ino });
  }
  const buf = await s.cache.bread(nr, 'xattr block');
  const entries = parseXattrBlock(buf.data, blockCtx(s, nr, buf, inode.ino)).map(copyEntry);
  buf.verified = true;
  const h = new XattrHeader(buf.data, 0);
  if (h.h_refcount === 0) throw new Corrupt('xattr block', 'h_refcount 0', { block: nr, ino: inode.ino });
  cacheInsert(s, h.h_hash, nr);
  return { nr, refcount: h.h_refcount, hash: h.h_hash, entries };
}

/** Rebuilds the in-inode area from `entries` (ext4_xattr_ibody_set) and checks it parses back. */
function writeIbody(inode: InodeInfo, st: XattrState, entries: readonly XattrInput[]): void {
  assert(st.ibody !== undefined, () => `inode ${inode.ino}: in-inode xattr write without an area`);
  const area = inode.ibodyXattrArea;
  assert(area.length === st.ibodyBytes, () => `inode ${inode.ino}: in-inode xattr area changed size`);
  area.set(buildXattrIbody(entries, area.length));
  assertSameEntries(parseXattrIbody(area, { ino: inode.ino }), entries, `inode ${inode.ino} in-inode xattrs`);
}

/** Asserts that parsed entries are exactly `want`, in order (names, indexes, values). */
function assertSameEntries(got: readonly XattrEntry[], want: readonly XattrInput[], what: string): void {
  assert(got.length === want.length, () => `${what}: ${got.length} entries parsed, ${want.length} written`);
  got.forEach((g, i) => {
    // OK to index: the lengths are equal.
    const w = want[i]!;
    assert(g.nameIndex === w.nameIndex && bytesEqual(g.nameBytes, w.nameBytes) && bytesEqual(g.value, w.value),
      () => `${what}: entry ${i} does not read back as written`);
  });
}

/**
 * ext4_xattr_block_set with the block's new entry list: release the block when no entry is
 * left; else reuse an identical cached block, modify the block in place when only this inode
 * uses it, or write a new block (copy-on-write of a shared one). i_file_acl and i_blocks
 * follow; the caller writes the inode.
 */
async function blockSet(
  s: Ext4Super, inode: InodeInfo, alloc: BlockAllocator, old: BlockState | undefined, entries: readonly XattrInput[],
): Promise<void> {
  checkInodeBlocks(s, inode, old !== undefined);
  if (entries.length === 0) {
    if (old === undefined) return;
    await releaseBlock(s, alloc, old);
    setFileAcl(inode, 0);
    addInodeBlocks(s, inode, -1);
    return;
  }
  const image = buildXattrBlock(entries, s.blockSize);
  assertSameEntries(parseXattrBlock(image, { blockNr: 0 }), [...entries].sort(compareXattrEntries), `inode ${inode.ino} xattr block`);
  const hash = new XattrHeader(image, 0).h_hash;
  const shared = await cacheFind(s, image, hash, old?.nr);
  if (shared !== undefined) {
    await bumpRefcount(s, shared);
    return switchBlock(s, inode, alloc, old, shared);
  }
  if (old !== undefined && old.refcount === 1) {
    const buf = await s.cache.bread(old.nr, 'xattr block');
    cacheRemove(s, old.hash, old.nr);
    buf.data.set(image);
    dirtyBlock(s, buf);
    cacheInsert(s, hash, old.nr);
    return;
  }
  const run = await alloc.allocBlocks({ goal: goalOf(s, inode), maxLen: 1, minLen: 1, metadata: true, ino: inode.ino });
  assert(run.len === 1 && run.pblk >= s.firstDataBlock && run.pblk < s.blocksCount, () => `xattr block allocation ${run.pblk}+${run.len}`);
  const buf = s.cache.getblk(run.pblk);
  buf.data.set(image);
  dirtyBlock(s, buf);
  cacheInsert(s, hash, run.pblk);
  return switchBlock(s, inode, alloc, old, run.pblk);
}

/** Points the inode at block `nr` (just referenced for it) and drops the old block's reference. */
async function switchBlock(s: Ext4Super, inode: InodeInfo, alloc: BlockAllocator, old: BlockState | undefined, nr: number): Promise<void> {
  setFileAcl(inode, nr);
  if (old !== undefined) await releaseBlock(s, alloc, old);
  else addInodeBlocks(s, inode, 1);
}

/**
 * ext4_xattr_release_block: decrement h_refcount, or at 1 free the block (dropping it from the
 * sharing cache and the buffer cache first, so nothing writes it back over its next owner).
 */
async function releaseBlock(s: Ext4Super, alloc: BlockAllocator, old: BlockState): Promise<void> {
  const buf = await s.cache.bread(old.nr, 'xattr block');
  const h = new XattrHeader(buf.data, 0);
  assert(h.h_refcount === old.refcount, () => `xattr block ${old.nr}: h_refcount changed under us`);
  if (h.h_refcount === 1) {
    cacheRemove(s, old.hash, old.nr);
    s.cache.forget(old.nr);
    await alloc.freeBlocks(old.nr, 1);
    return;
  }
  h.h_refcount = h.h_refcount - 1;
  dirtyBlock(s, buf);
}

/** Adds one reference to a shared block found in the cache. */
async function bumpRefcount(s: Ext4Super, nr: number): Promise<void> {
  const buf = await s.cache.bread(nr, 'xattr block');
  const h = new XattrHeader(buf.data, 0);
  assert(h.h_refcount >= 1 && h.h_refcount < EXT4_XATTR_REFCOUNT_MAX, () => `xattr block ${nr}: h_refcount ${h.h_refcount} to bump`);
  h.h_refcount = h.h_refcount + 1;
  dirtyBlock(s, buf);
}

/**
 * Marks an xattr block dirty with its checksum (ext4_xattr_block_csum_set): stamped now, so the
 * read side sees a valid block before commit, and again by the finalizer at write time.
 */
function dirtyBlock(s: Ext4Super, buf: MetaBuffer): void {
  if (!s.features.metadataCsum) {
    s.cache.markDirty(buf);
    return;
  }
  const nr = buf.blockNr;
  const seed = s.csumSeed;
  setXattrBlockCsum(buf.data, nr, seed);
  s.cache.markDirty(buf, (data) => setXattrBlockCsum(data, nr, seed));
}

/** Allocation goal of a new xattr block: the first block of the inode's group (as the kernel). */
function goalOf(s: Ext4Super, inode: InodeInfo): number {
  return s.groupFirstBlock(Math.floor((inode.ino - 1) / s.inodesPerGroup));
}

/** Sets i_file_acl (lo 32 bits and l_i_file_acl_high). */
function setFileAcl(inode: InodeInfo, nr: number): void {
  assert(Number.isSafeInteger(nr) && nr >= 0 && nr < 2 ** 48, () => `i_file_acl ${nr}`);
  inode.view.i_file_acl_lo = nr % 0x1_0000_0000;
  inode.view.l_i_file_acl_high = Math.floor(nr / 0x1_0000_0000);
  assert(inode.fileAcl === nr, () => `i_file_acl ${nr} did not read back`);
}

/**
 * Checks, before anything changes, that i_blocks can be adjusted for the xattr block: it is in
 * 512-byte units (no HUGE_FILE_FL, which addInodeBlocks does not handle), and it counts the
 * block the inode references now (Corrupt otherwise, rather than a negative count later).
 */
function checkInodeBlocks(s: Ext4Super, inode: InodeInfo, hasBlock: boolean): void {
  if ((inode.flags & EXT4_HUGE_FILE_FL) !== 0) {
    throw new Incompatible(`inode ${inode.ino}: xattr block change on a HUGE_FILE_FL inode (i_blocks in filesystem blocks)`, ['huge_file']);
  }
  if (hasBlock && inode.blocks512(s.features.hugeFile, s.blockSize) < s.blockSize / 512) {
    throw new Corrupt('inode', `i_blocks does not count xattr block ${inode.fileAcl}`, { ino: inode.ino });
  }
}

/*
 * The sharing cache (the kernel's EA_BLOCK_CACHE, an mb_cache keyed by h_hash). Per mount,
 * holding block numbers only; every candidate is re-read and compared before use.
 */
const blockCaches = new WeakMap<Ext4Super, Map<number, number[]>>();
/** Most hashes remembered per mount; the oldest is forgotten first (losing only sharing). */
const CACHE_MAX_HASHES = 1 << 16;
/** Most blocks remembered per hash (differing blocks with one h_hash are rare). */
const CACHE_MAX_PER_HASH = 8;

function cacheOf(s: Ext4Super): Map<number, number[]> {
  let c = blockCaches.get(s);
  if (c === undefined) {
    c = new Map();
    blockCaches.set(s, c);
  }
  return c;
}

/** ext4_xattr_block_cache_insert: h_hash 0 means "never share". */
function cacheInsert(s: Ext4Super, hash: number, nr: number): void {
  if (hash === 0) return;
  const c = cacheOf(s);
  const list = c.get(hash) ?? [];
  if (list.includes(nr)) return;
  list.push(nr);
  if (list.length > CACHE_MAX_PER_HASH) list.shift();
  c.set(hash, list);
  if (c.size > CACHE_MAX_HASHES) {
    // OK: Map keys iterate oldest first, and the map is not empty here.
    c.delete(c.keys().next().value!);
  }
}

function cacheRemove(s: Ext4Super, hash: number, nr: number): void {
  const c = cacheOf(s);
  const list = c.get(hash)?.filter((b) => b !== nr) ?? [];
  if (list.length === 0) c.delete(hash);
  else c.set(hash, list);
}

/**
 * ext4_xattr_block_cache_find: a block other than `exclude` whose entries equal `image`'s
 * (ext4_xattr_cmp: index, name, e_hash, value) and whose h_refcount leaves room for one more
 * reference. Entries that no longer match their key are dropped.
 */
async function cacheFind(s: Ext4Super, image: Uint8Array, hash: number, exclude: number | undefined): Promise<number | undefined> {
  if (hash === 0) return undefined;
  const want = parseXattrBlock(image, { blockNr: 0 });
  for (const nr of [...(cacheOf(s).get(hash) ?? [])]) {
    if (nr === exclude) continue;
    const buf = await s.cache.bread(nr, 'xattr block');
    let got: XattrEntry[];
    try {
      got = parseXattrBlock(buf.data, blockCtx(s, nr, buf));
    } catch (e) {
      if (!(e instanceof Corrupt)) throw e;
      cacheRemove(s, hash, nr);
      continue;
    }
    const h = new XattrHeader(buf.data, 0);
    if (h.h_hash !== hash) {
      cacheRemove(s, hash, nr);
      continue;
    }
    if (h.h_refcount >= 1 && h.h_refcount < EXT4_XATTR_REFCOUNT_MAX && sameBlockEntries(got, want)) return nr;
  }
  return undefined;
}

/** ext4_xattr_cmp: same entries in the same order, with equal hashes and values. */
function sameBlockEntries(a: readonly XattrEntry[], b: readonly XattrEntry[]): boolean {
  if (a.length !== b.length) return false;
  return a.every((x, i) => {
    // OK to index: the lengths are equal.
    const y = b[i]!;
    return x.nameIndex === y.nameIndex && x.hash === y.hash && bytesEqual(x.nameBytes, y.nameBytes) && bytesEqual(x.value, y.value);
  });
}
