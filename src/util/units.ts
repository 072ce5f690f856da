/**
 * Branded integers (STYLE.md §4): numbers carry their kind so a logical block is never passed
 * where a physical block is expected. They stay plain `number`s at run time; safety of the
 * integer range is asserted where they enter from disk or from the device.
 */
import { assert } from './assert.js';

declare const brand: unique symbol;
type Brand<T, B extends string> = T & { readonly [brand]: B };

/** A logical block number inside a file (in filesystem blocks). */
export type Lblk = Brand<number, 'Lblk'>;
/** A physical block number on the device (in filesystem blocks). */
export type Pblk = Brand<number, 'Pblk'>;
/** An inode number (1-based, as on disk). */
export type Ino = Brand<number, 'Ino'>;
/** A block group number. */
export type Group = Brand<number, 'Group'>;

export const lblk = (n: number): Lblk => n as Lblk;
export const pblk = (n: number): Pblk => n as Pblk;
export const ino = (n: number): Ino => n as Ino;
export const group = (n: number): Group => n as Group;

/** Combines a 32-bit low half and a high half into one safe integer. */
export function hilo(hi: number, lo: number): number {
  const v = hi * 0x1_0000_0000 + (lo >>> 0);
  assert(Number.isSafeInteger(v), () => `hi/lo value ${hi}:${lo} is not a safe integer`);
  return v;
}

/** Splits a safe non-negative integer into its high and low 32-bit halves. */
export function splitHiLo(v: number): { hi: number; lo: number } {
  assert(Number.isSafeInteger(v) && v >= 0, () => `cannot split ${v} into hi/lo`);
  return { hi: Math.floor(v / 0x1_0000_0000), lo: v >>> 0 };
}

/** Rounds `n` up to a multiple of `m`. */
export function roundUp(n: number, m: number): number {
  return Math.ceil(n / m) * m;
}

/** Integer division rounding up. */
export function divCeil(n: number, d: number): number {
  return Math.floor((n + d - 1) / d);
}
