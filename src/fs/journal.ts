/**
 * The journal as the read path sees it: the jbd2 superblock of the internal journal inode,
 * validated like the kernel's journal_load() does before it would replay (ext4_load_journal).
 * Replay itself is a later layer; this is what lets `info` say whether the log holds
 * transactions and lets open() refuse a journal the kernel would refuse.
 */
import type { Ext4Super } from './super.js';
import { readInode } from './inode/inode.js';
import { FileMap } from './inode/file-map.js';
import {
  JournalSuperblock, JBD2_SUPERBLOCK_SIZE, validateJournalSuperblock, journalErrno, type JournalGeometry,
} from '../format/jbd2.js';
import { Corrupt } from '../util/errors.js';

/** What `info` reports about the journal. */
export interface JournalInfo extends JournalGeometry {
  ino: number;
  /** Blocks of the journal inode (i_size / block size). */
  inodeBlocks: number;
  /** s_sequence: the first transaction the log would hold. */
  sequence: number;
  /** s_start: the first log block of the oldest transaction, 0 when the log is empty. */
  start: number;
  /** s_errno as a signed errno (nonzero: the journal recorded an abort). */
  errno: number;
  features: { compat: number; incompat: number; roCompat: number };
}

/** Reads and validates the journal superblock of the internal journal (s_journal_inum). */
export async function loadJournalInfo(s: Ext4Super): Promise<JournalInfo> {
  const ino = s.sb.s_journal_inum;
  if (ino === 0) throw new Corrupt('superblock', 'has_journal set but s_journal_inum is 0');
  const info = await readInode(s, ino);
  if (info.type !== 'file') throw new Corrupt('journal inode', `is a ${info.type}, not a regular file`, { ino });
  const bs = s.blockSize;
  const inodeBlocks = Math.floor(info.size / bs);
  if (inodeBlocks < 1) throw new Corrupt('journal inode', `i_size ${info.size} holds no block`, { ino });
  const fmap = new FileMap(s, info);
  const m = await fmap.map(0, 1);
  if (m.kind !== 'mapped') throw new Corrupt('journal inode', 'block 0 (the jbd2 superblock) is not mapped', { ino });
  const buf = new Uint8Array(bs);
  await s.readBlocks(m.pblk, 1, buf);
  const jsb = new JournalSuperblock(buf.subarray(0, JBD2_SUPERBLOCK_SIZE), 0);
  const geo = validateJournalSuperblock(jsb, { blockSize: bs, journalBlocks: inodeBlocks, blockNr: m.pblk });
  return {
    ...geo, ino, inodeBlocks, sequence: jsb.s_sequence, start: jsb.s_start, errno: journalErrno(jsb),
    features: { compat: jsb.s_feature_compat, incompat: jsb.s_feature_incompat, roCompat: jsb.s_feature_ro_compat },
  };
}
