//! How big sled's page cache is: what `[store] cache_mb` says, else sized from the store when
//! it opens.
//!
//! sled keeps memory of its own beside its page cache, in proportion to the store (a page
//! table and segment accounting over every page): about 283 MB resident right after opening a
//! 1.75 GB store of 1,000,000 leads, with 16 MiB of cache. A fixed cache is therefore either
//! too small for a small store or too big for a large one. With 16 MiB, a 20,000-lead store
//! does not fit: every step decodes its lead and enrollment from disk again, and the send path
//! spent 272–337 µs of CPU per email against 233–247 µs with 128 MiB, in runs taken in turn
//! (`cargo bench --bench smtp`). With 128 MiB a million-lead daemon would stand far over its
//! 300 MB. So, unless the configuration says otherwise, the cache gets what is left of that
//! budget once sled's own share is counted, between [`MIN_BYTES`] and [`MAX_BYTES`]. It is
//! sized once, when the store opens (sled cannot resize it): a store that grows much while a
//! daemon runs gets its smaller cache at the next start.

use std::path::Path;

const MIB: u64 = 1024 * 1024;
/// The smallest automatic cache: what a million leads get (the front of the due index).
pub const MIN_BYTES: u64 = 16 * MIB;
/// The largest automatic cache: a few tens of thousands of leads fit whole.
pub const MAX_BYTES: u64 = 128 * MIB;
/// The resident memory a daemon's store should stay within: 300 MB less the daemon's own
/// working memory while it sends (batches, rendered emails, buffers: about 80 MB; 274 MB
/// peak in all at 100,000 leads with the largest cache, `cargo bench --bench engine`).
const BUDGET_BYTES: u64 = 220 * MIB;

/// The page cache for the sled store in `path`: `configured_mb` MiB, or sized from the store
/// when it is 0.
pub fn cache_bytes(configured_mb: u64, path: &Path) -> u64 {
    if configured_mb > 0 {
        return configured_mb.saturating_mul(MIB);
    }
    automatic(size_on_disk(path))
}

/// The automatic cache for a store of `disk` bytes: sled's own share is about a sixth of the
/// store's size on disk (283 MB for 1.75 GB), and each byte of cache costs about 1.2 bytes
/// resident (287 MB in all with 16 MiB of cache, 343 MB with 64 MiB, at a million leads).
fn automatic(disk: u64) -> u64 {
    let left = BUDGET_BYTES.saturating_sub(disk / 6);
    (left / 6 * 5).clamp(MIN_BYTES, MAX_BYTES)
}

/// The bytes of the store's files in `path` (its log and blobs); 0 for a store not made yet.
fn size_on_disk(path: &Path) -> u64 {
    fn files(dir: &Path, depth: u8) -> u64 {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .flatten()
            .map(|entry| match entry.metadata() {
                Ok(meta) if meta.is_file() => meta.len(),
                Ok(meta) if meta.is_dir() && depth > 0 => files(&entry.path(), depth - 1),
                _ => 0,
            })
            .sum()
    }
    files(path, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_store_gets_the_largest_cache_and_a_million_leads_the_smallest() {
        assert_eq!(automatic(0), MAX_BYTES);
        // 20,000 leads take about 36 MB on disk.
        assert_eq!(automatic(36_000_000), MAX_BYTES);
        // 1,000,000 leads take about 1.75 GB.
        assert_eq!(automatic(1_750_000_000), MIN_BYTES);
        let middle = automatic(1_000_000_000);
        assert!(MIN_BYTES < middle && middle < MAX_BYTES, "{middle}");
    }

    #[test]
    fn the_cache_never_grows_with_the_store() {
        let sizes = (0..40).map(|step| step * 50_000_000);
        let caches: Vec<u64> = sizes.map(automatic).collect();
        assert!(
            caches.windows(2).all(|pair| pair[1] <= pair[0]),
            "{caches:?}"
        );
    }

    #[test]
    fn a_configured_size_wins_and_zero_sizes_it_from_the_files() {
        let dir = std::env::temp_dir().join(format!("nurture-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("blobs")).unwrap();
        assert_eq!(cache_bytes(32, &dir), 32 * MIB);
        assert_eq!(cache_bytes(0, &dir), MAX_BYTES);
        // A store of 1.8 GB (sparse files: their length is what counts), its blobs included,
        // gets the smallest cache.
        let db = std::fs::File::create(dir.join("db")).unwrap();
        db.set_len(1_000_000_000).unwrap();
        assert!(cache_bytes(0, &dir) > MIN_BYTES);
        let blob = std::fs::File::create(dir.join("blobs").join("1")).unwrap();
        blob.set_len(800_000_000).unwrap();
        assert_eq!(cache_bytes(0, &dir), MIN_BYTES);
        assert_eq!(cache_bytes(0, &dir.join("missing")), MAX_BYTES);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
