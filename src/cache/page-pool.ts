/**
 * Page memory (the kernel's page allocator, for one page size): pages are carved out of slabs
 * of SLAB_PAGES and recycled through a free list, so a long write does not allocate (and the
 * garbage collector does not chase) one ArrayBuffer per page. Memory stays bounded by the
 * page cache's own limit: a freed page is reused before a new slab is made.
 */
import { assert } from '../util/assert.js';

const SLAB_PAGES = 64;

export class PagePool {
  private readonly free: Uint8Array[] = [];
  /** Pages handed out and not yet returned (a leak check: zero when the cache is empty). */
  inUse = 0;

  constructor(readonly pageSizeBytes: number) {}

  /**
   * A page whose bytes are whatever its last owner left (a new slab's are zeros): the page cache
   * reads or zeroes every byte a write does not cover before anyone reads the page (fillPages),
   * so clearing here would only be done twice.
   */
  alloc(): Uint8Array {
    this.inUse++;
    const hit = this.free.pop();
    if (hit !== undefined) return hit;
    const slab = new Uint8Array(SLAB_PAGES * this.pageSizeBytes);
    for (let i = SLAB_PAGES - 1; i > 0; i--) this.free.push(slab.subarray(i * this.pageSizeBytes, (i + 1) * this.pageSizeBytes));
    return slab.subarray(0, this.pageSizeBytes);
  }

  /** Returns a page nobody references any more (not under I/O, out of every mapping). */
  release(page: Uint8Array): void {
    assert(page.length === this.pageSizeBytes, () => `page pool: released ${page.length} bytes`);
    this.inUse--;
    assert(this.inUse >= 0, 'page pool: more pages released than allocated');
    this.free.push(page);
  }
}
