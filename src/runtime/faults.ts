/**
 * Named fault sites (issue 5's `faults.hit('io_end_alloc')`): the places where the kernel can
 * fail an allocation are marked in the code with `faults.hit(site)`. In production no injector
 * is installed and a hit costs one comparison; the seeded simulator installs one that decides,
 * from its PRNG, which hits fail with ENOMEM, so every failure replays from its seed.
 */
import { PosixError } from '../util/errors.js';

/** Every site the code marks; tests iterate over this list to fail each one. */
export const FAULT_SITES = [
  /** IoEnd.init in writeback (ext4_init_io_end's kmem_cache_zalloc). */
  'io_end_alloc',
  /** A new bio in writeback (bio_alloc). */
  'bio_alloc',
  /** A range entry of an io_end (ext4_io_end_vec). */
  'io_range_alloc',
  /** Block allocation for delayed or fallocated blocks (before the allocator runs). */
  'block_alloc',
  /** The conversion worker's transaction (ext4_convert_unwritten_extents). */
  'conversion',
  /** Direct I/O: the lazily allocated io_end of an async request. */
  'dio_io_end_alloc',
  /** Direct I/O: a bio of a direct request. */
  'dio_bio_alloc',
] as const;
export type FaultSite = (typeof FAULT_SITES)[number];

/** Decides whether a hit fails. */
export type FaultInjector = (site: FaultSite) => boolean;

class Faults {
  private injector: FaultInjector | undefined;
  /** Hits per site since install (for tests that check a site was reached). */
  readonly hits = new Map<FaultSite, number>();
  /** Failures injected per site since install. */
  readonly failures = new Map<FaultSite, number>();

  /** Installs an injector (tests only); returns a function that removes it. */
  install(injector: FaultInjector): () => void {
    this.injector = injector;
    this.hits.clear();
    this.failures.clear();
    return () => {
      if (this.injector === injector) this.injector = undefined;
    };
  }

  /** Throws ENOMEM when the installed injector fails this hit; a no-op otherwise. */
  hit(site: FaultSite): void {
    const inj = this.injector;
    if (inj === undefined) return;
    this.hits.set(site, (this.hits.get(site) ?? 0) + 1);
    if (!inj(site)) return;
    this.failures.set(site, (this.failures.get(site) ?? 0) + 1);
    throw new PosixError('ENOMEM', site, undefined, `injected allocation failure at ${site}`);
  }
}

/** The process-wide fault sites. */
export const faults = new Faults();
