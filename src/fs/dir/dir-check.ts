/**
 * Whole-directory verification, the directory part of e2fsck's pass 2 in short
 * (e2fsck/pass2.c: check_dir_block, parse_int_node, the htree min/max hash checks). The write
 * path runs it after every operation in debug mode (setDirWriteDebug) and tests run it on
 * directories read back from disk.
 *
 * Checks: every block parses with the read-side parsers (checksums too, for blocks without
 * unwritten changes); block 0 starts with '.' and '..' (or is a dx_root); no name appears twice,
 * and '.'/'..' nowhere else. Indexed directories additionally: the index is a tree of exactly
 * indirect_levels + 1 levels reaching every block but 0 exactly once (e2fsck's "block not
 * referenced" / "referenced twice"), index hashes ascend within each node and stay inside the
 * range their parent gives, and every name in a leaf hashes into its leaf's range
 * [hash & ~1, next hash), where a next hash with the continuation bit (| 1) lets the leaf also
 * hold names equal to it. Any failure is a Corrupt naming the block.
 */
import type { Ext4Super } from '../super.js';
import type { InodeInfo } from '../inode/inode.js';
import type { MetaBuffer } from '../../cache/buffer-cache.js';
import type { DirBlocks } from './dir-write.js';
import { parseDirBlock, type DirEntryRaw, type DirParseCtx } from '../../format/dirent.js';
import { parseDxRoot, parseDxNode, type DxEntry } from '../../format/htree.js';
import { ext4fsDirhash, hashVersionFor } from '../../format/dirhash.js';
import { Corrupt, hex } from '../../util/errors.js';
import { decodeName } from '../../util/bytes.js';

/** One live entry found by verifyDir (name copied out of the block). */
export interface DirCheckEntry {
  name: Uint8Array;
  ino: number;
  fileType: number;
}

export interface DirCheckReport {
  /** Live entries other than '.' and '..', in block (linear) or hash-tree (indexed) order. */
  entries: DirCheckEntry[];
  dotIno: number;
  dotdotIno: number;
  /** dx_root_info.indirect_levels, or undefined for a linear directory. */
  indirectLevels: number | undefined;
  /** Leaf blocks (all blocks of a linear directory). */
  leafBlocks: number;
  /** dx_root and dx_node blocks (0 for a linear directory). */
  indexBlocks: number;
}

/** Exclusive upper bound of the hash space (one past 0xffffffff). */
const HASH_END = 0x1_0000_0000;

class Checker {
  readonly n: number;
  readonly report: DirCheckReport;
  private readonly names = new Set<string>();
  constructor(
    private readonly s: Ext4Super,
    private readonly dir: InodeInfo,
    private readonly blocks: DirBlocks,
  ) {
    this.n = blocks.count();
    this.report = { entries: [], dotIno: 0, dotdotIno: 0, indirectLevels: undefined, leafBlocks: 0, indexBlocks: 0 };
  }

  bad(detail: string, buf?: MetaBuffer): never {
    throw new Corrupt('directory', detail, { ino: this.dir.ino, ...(buf !== undefined ? { block: buf.blockNr } : {}) });
  }

  ctx(buf: MetaBuffer): DirParseCtx {
    const s = this.s;
    return {
      blockNr: buf.blockNr, ino: this.dir.ino, hasFiletype: s.features.filetype, inodesCount: s.sb.s_inodes_count,
      // A dirty buffer's checksum is stamped at sync: only its structure can be checked now.
      skipCsum: buf.dirty, ...(s.features.metadataCsum ? { csumSeed: this.dir.csumSeed } : {}),
    };
  }

  get(lblk: number): Promise<MetaBuffer> {
    if (lblk < 0 || lblk >= this.n) this.bad(`block ${lblk} referenced, the directory has ${this.n}`);
    return this.blocks.get(lblk);
  }

  /** Records a name; a second occurrence, or '.'/'..' outside block 0's head, is corruption. */
  addName(e: DirEntryRaw, buf: MetaBuffer): void {
    const name = e.nameBytes;
    if ((name.length === 1 && name[0] === 0x2e) || (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e)) {
      this.bad(`'${decodeName(name)}' at offset ${e.offset} outside the head of block 0`, buf);
    }
    const key = String.fromCharCode(...name);
    if (this.names.has(key)) this.bad(`name "${decodeName(name)}" appears twice`, buf);
    this.names.add(key);
    this.report.entries.push({ name: name.slice(), ino: e.ino, fileType: e.fileType });
  }

  async linear(): Promise<void> {
    for (let lblk = 0; lblk < this.n; lblk++) {
      const buf = await this.get(lblk);
      let entries = parseDirBlock(buf.data, this.ctx(buf));
      if (lblk === 0) {
        const [dot, dotdot] = entries;
        const isDots = dot !== undefined && dot.offset === 0 && dot.nameBytes.length === 1 && dot.nameBytes[0] === 0x2e &&
          dotdot !== undefined && dotdot.nameBytes.length === 2 && dotdot.nameBytes[0] === 0x2e && dotdot.nameBytes[1] === 0x2e;
        if (!isDots) this.bad("block 0 does not start with '.' and '..'", buf);
        this.report.dotIno = dot.ino;
        this.report.dotdotIno = dotdot.ino;
        entries = entries.slice(2);
      }
      for (const e of entries) this.addName(e, buf);
      this.report.leafBlocks++;
    }
  }

  async indexed(): Promise<void> {
    const s = this.s;
    const buf = await this.get(0);
    const root = parseDxRoot(buf.data, { ...this.ctx(buf), verifyCsum: !buf.dirty, largeDir: s.features.largeDir });
    this.report.dotIno = root.dot.ino;
    this.report.dotdotIno = root.dotdot.ino;
    this.report.indirectLevels = root.indirectLevels;
    this.report.indexBlocks++;
    const version = hashVersionFor(root.hashVersion, s.features.unsignedHash);
    const hash = (name: Uint8Array): number => ext4fsDirhash(name, version, s.hashSeed).hash;
    const seen = new Uint8Array(this.n);
    seen[0] = 1;
    await this.walk(root.entries, 0, root.indirectLevels, 0, HASH_END, seen, hash, buf);
    for (let b = 1; b < this.n; b++) if (seen[b] === 0) this.bad(`block ${b} is not referenced by the htree index`);
  }

  /** Checks one index block's entries inside [lo, hi] and descends into each child. */
  async walk(
    entries: readonly DxEntry[], depth: number, levels: number, lo: number, hi: number, seen: Uint8Array,
    hash: (name: Uint8Array) => number, at: MetaBuffer,
  ): Promise<void> {
    for (let i = 0; i < entries.length; i++) {
      // OK to index: i and i + 1 are checked against entries.length.
      const e = entries[i]!;
      const cLo = i === 0 ? lo : e.hash;
      const cHi = i + 1 < entries.length ? entries[i + 1]!.hash : hi;
      if (cLo < lo || cLo > hi) this.bad(`index entry ${i} hash 0x${hex(cLo)} outside its parent's range`, at);
      if (e.block === 0 || e.block >= this.n || seen[e.block] !== 0) {
        this.bad(`index entry ${i} points at block ${e.block} (out of range or referenced twice)`, at);
      }
      seen[e.block] = 1;
      const buf = await this.get(e.block);
      if (depth < levels) {
        const node = parseDxNode(buf.data, { ...this.ctx(buf), verifyCsum: !buf.dirty });
        this.report.indexBlocks++;
        await this.walk(node.entries, depth + 1, levels, cLo, cHi, seen, hash, buf);
      } else {
        this.leaf(buf, cLo, cHi, hash);
      }
    }
  }

  /** Every name of a leaf hashes into [lo & ~1, hi & ~1), or equals hi & ~1 when hi is continued. */
  leaf(buf: MetaBuffer, lo: number, hi: number, hash: (name: Uint8Array) => number): void {
    const floor = lo - (lo % 2);
    const top = hi - (hi % 2);
    for (const e of parseDirBlock(buf.data, this.ctx(buf))) {
      const h = hash(e.nameBytes);
      if (h < floor || h > top || (h === top && hi % 2 === 0)) {
        this.bad(`name "${decodeName(e.nameBytes)}" hash 0x${hex(h)} outside its leaf's range 0x${hex(lo)}..0x${hex(hi)}`, buf);
      }
      this.addName(e, buf);
    }
    this.report.leafBlocks++;
  }
}

/**
 * Verifies a whole directory (see the module comment) and returns what it holds. Throws
 * Corrupt (or BadCrc) at the first inconsistency.
 */
export async function verifyDir(s: Ext4Super, dir: InodeInfo, blocks: DirBlocks): Promise<DirCheckReport> {
  const c = new Checker(s, dir, blocks);
  if (c.n === 0) c.bad('has no blocks');
  if (dir.isIndexedDir && s.features.dirIndex) await c.indexed();
  else await c.linear();
  return c.report;
}
