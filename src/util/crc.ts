/**
 * Checksums used by ext4: the raw kernel crc32c (no pre/post inversion, as `crc32c(seed, buf)`
 * in lib/libcrc32c.c, which ext4_chksum() calls) and the crc16 (poly 0x8005, reflected) used by
 * `gdt_csum`/`uninit_bg` group descriptors. crc32c comes from the `crc-32` package (PEERS.md
 * measured it at ~2 GB/s, pure JS); its buf(data, seed) computes ~raw(~seed, data).
 */
import CRC32C from 'crc-32/crc32c.js';

/** The kernel's raw crc32c: continue `seed` over `data`, no final inversion. */
export function crc32cRaw(seed: number, data: Uint8Array): number {
  return ~CRC32C.buf(data, ~seed) >>> 0;
}

const CRC16_TABLE = (() => {
  const t = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xa001 : c >>> 1;
    t[i] = c;
  }
  return t;
})();

/** The kernel's crc16 (lib/crc16.c, poly 0x8005 reflected), continuing `crc` over `data`. */
export function crc16(crc: number, data: Uint8Array): number {
  let c = crc & 0xffff;
  for (let i = 0; i < data.length; i++) {
    // OK to index without a check: i < data.length and the table has 256 entries.
    c = ((c >>> 8) ^ CRC16_TABLE[(c ^ data[i]!) & 0xff]!) & 0xffff;
  }
  return c;
}
