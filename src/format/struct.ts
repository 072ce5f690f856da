/**
 * defineStruct(): one definition per on-disk structure (STYLE.md §2). A structure is a field
 * table of (offset, type) under kernel names, in the order of the kernel's
 * Documentation/filesystems/ext4/*.rst. The table becomes a view class with a getter and a
 * setter per field over a byte array at a base offset, little-endian unless a field is declared
 * big-endian (be16/be32, used only by jbd2). The table is checked when the module loads:
 * offsets ascend, fields do not overlap, and the last one ends inside the declared size. Byte
 * offsets appear nowhere outside format/.
 */
import { assert } from '../util/assert.js';

/**
 * A scalar field: a little-endian unsigned integer of 1, 2, 4 or 8 bytes, or a big-endian one
 * of 2 or 4 bytes (`be16`/`be32`, for jbd2 structures, which the journal stores big-endian).
 */
export interface ScalarField {
  readonly off: number;
  readonly type: 'u8' | 'u16' | 'u32' | 'u64' | 'be16' | 'be32';
}
/** A byte-array field (uuids, names, reserved areas): read as a live subarray view. */
export interface BytesField {
  readonly off: number;
  readonly type: 'bytes';
  readonly len: number;
}
export type FieldDef = ScalarField | BytesField;
export type FieldTable = Readonly<Record<string, FieldDef>>;

/** The instance type of a view over `F`: a number per scalar, a Uint8Array per bytes field. */
export type FieldsOf<F extends FieldTable> = {
  -readonly [K in keyof F]: F[K] extends BytesField ? Uint8Array : number;
};

/** What every generated view has besides its fields. */
export interface StructView {
  /** The bytes this view reads and writes (shared, not copied). */
  readonly bytes: Uint8Array;
  /** Offset of the structure inside `bytes`. */
  readonly base: number;
}

export interface StructClass<F extends FieldTable> {
  new (bytes: Uint8Array, base?: number): StructView & FieldsOf<F>;
  /** The structure's size in bytes, as declared. */
  readonly SIZE: number;
  /** Kernel name of the structure, for error messages. */
  readonly STRUCT_NAME: string;
  /** The field table, for dumps and tests. */
  readonly FIELDS: F;
  /** Byte offset of a field (for checksum ranges that the kernel defines by field). */
  offsetOf(field: keyof F & string): number;
}

const WIDTH = { u8: 1, u16: 2, u32: 4, u64: 8, be16: 2, be32: 4 } as const;

function fieldLen(f: FieldDef): number {
  return f.type === 'bytes' ? f.len : WIDTH[f.type];
}

/** Checks a field table: ascending, non-overlapping, inside `size`. Throws Ext4Bug otherwise. */
function checkTable(name: string, size: number, fields: FieldTable): void {
  let end = 0;
  for (const [k, f] of Object.entries(fields)) {
    assert(f.off >= end, () => `${name}.${k} at 0x${f.off.toString(16)} overlaps previous field`);
    if (f.type !== 'bytes' && f.type !== 'u8') {
      assert(f.off % WIDTH[f.type] === 0 || name.startsWith('jbd'), () => `${name}.${k} misaligned`);
    }
    end = f.off + fieldLen(f);
  }
  assert(end <= size, () => `${name}: last field ends at ${end}, past size ${size}`);
}

/** Builds the view class for a field table. See the module comment. */
export function defineStruct<const F extends FieldTable>(
  name: string,
  size: number,
  fields: F,
): StructClass<F> {
  checkTable(name, size, fields);
  class View {
    // `declare`: no field initializers, so a view costs two stores (views are made per
    // directory entry and index entry on hot paths).
    declare readonly bytes: Uint8Array;
    declare readonly base: number;
    constructor(bytes: Uint8Array, base = 0) {
      assert(base >= 0 && base + size <= bytes.length, () =>
        `${name} view at ${base} (+${size}) outside a buffer of ${bytes.length} bytes`);
      this.bytes = bytes;
      this.base = base;
    }
    static readonly SIZE = size;
    static readonly STRUCT_NAME = name;
    static readonly FIELDS = fields;
    static offsetOf(field: string): number {
      const f = fields[field];
      assert(f !== undefined, `${name} has no field ${field}`);
      return f.off;
    }
  }
  for (const [k, f] of Object.entries(fields)) {
    Object.defineProperty(View.prototype, k, accessor(f));
  }
  // OK to cast: the prototype now carries exactly the accessors FieldsOf<F> describes.
  return View as unknown as StructClass<F>;
}

type Self = { base: number; bytes: Uint8Array };

// Fields are read and written byte by byte: cheaper than a DataView, which would have to be
// found (or made) for every view, and views are made per directory entry.
function getLe16(b: Uint8Array, o: number): number {
  // OK to index: the constructor checked that the structure lies inside `b`.
  return b[o]! | (b[o + 1]! << 8);
}
function getLe32(b: Uint8Array, o: number): number {
  // OK to index: as above.
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}
function setLe16(b: Uint8Array, o: number, v: number): void {
  b[o] = v;
  b[o + 1] = v >>> 8;
}
/** Stores `v` as a little-endian u32 at `o`, byte by byte (no view, no DataView). */
export function setLe32(b: Uint8Array, o: number, v: number): void {
  b[o] = v;
  b[o + 1] = v >>> 8;
  b[o + 2] = v >>> 16;
  b[o + 3] = v >>> 24;
}

function accessor(f: FieldDef): PropertyDescriptor {
  const off = f.off;
  switch (f.type) {
    case 'u8':
      return {
        // OK to index: the constructor checked that the structure lies inside `bytes`.
        get(this: Self) { return this.bytes[this.base + off]!; },
        set(this: Self, v: number) { this.bytes[this.base + off] = checkUint(v, 0xff); },
      };
    case 'u16':
      return {
        get(this: Self) { return getLe16(this.bytes, this.base + off); },
        set(this: Self, v: number) { setLe16(this.bytes, this.base + off, checkUint(v, 0xffff)); },
      };
    case 'u32':
      return {
        get(this: Self) { return getLe32(this.bytes, this.base + off); },
        set(this: Self, v: number) { setLe32(this.bytes, this.base + off, checkUint(v, 0xffffffff)); },
      };
    case 'be16':
      // jbd2 structures are big-endian.
      return {
        get(this: Self) {
          const o = this.base + off;
          // OK to index: as above.
          return (this.bytes[o]! << 8) | this.bytes[o + 1]!;
        },
        set(this: Self, v: number) {
          const o = this.base + off;
          checkUint(v, 0xffff);
          this.bytes[o] = v >>> 8;
          this.bytes[o + 1] = v;
        },
      };
    case 'be32':
      return {
        get(this: Self) {
          const b = this.bytes;
          const o = this.base + off;
          // OK to index: as above.
          return ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
        },
        set(this: Self, v: number) {
          const b = this.bytes;
          const o = this.base + off;
          checkUint(v, 0xffffffff);
          b[o] = v >>> 24;
          b[o + 1] = v >>> 16;
          b[o + 2] = v >>> 8;
          b[o + 3] = v;
        },
      };
    case 'u64':
      // Read as a double: exact below 2^53. Callers that use a u64 as a block or byte count
      // validate it with Number.isSafeInteger before trusting it.
      return {
        get(this: Self) {
          return getLe32(this.bytes, this.base + off + 4) * 0x1_0000_0000 + getLe32(this.bytes, this.base + off);
        },
        set(this: Self, v: number) {
          assert(Number.isSafeInteger(v) && v >= 0, () => `u64 value ${v} is not a safe integer`);
          setLe32(this.bytes, this.base + off, v >>> 0);
          setLe32(this.bytes, this.base + off + 4, Math.floor(v / 0x1_0000_0000));
        },
      };
    case 'bytes': {
      const len = f.len;
      return {
        get(this: Self) { return this.bytes.subarray(this.base + off, this.base + off + len); },
        set(this: Self, v: Uint8Array) {
          assert(v.length <= len, () => `value of ${v.length} bytes for a ${len}-byte field`);
          this.bytes.fill(0, this.base + off, this.base + off + len);
          this.bytes.set(v, this.base + off);
        },
      };
    }
  }
}

function checkUint(v: number, max: number): number {
  assert(Number.isInteger(v) && v >= 0 && v <= max, () => `value ${v} out of range 0..${max}`);
  return v;
}

/** Shorthands for field tables. */
export const u8 = (off: number): ScalarField => ({ off, type: 'u8' });
export const u16 = (off: number): ScalarField => ({ off, type: 'u16' });
export const u32 = (off: number): ScalarField => ({ off, type: 'u32' });
export const u64 = (off: number): ScalarField => ({ off, type: 'u64' });
export const bytes = (off: number, len: number): BytesField => ({ off, type: 'bytes', len });
/** Big-endian shorthands (jbd2). */
export const be16 = (off: number): ScalarField => ({ off, type: 'be16' });
export const be32 = (off: number): ScalarField => ({ off, type: 'be32' });
