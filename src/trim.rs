//! Giving memory back on request: `malloc_trim`.

use crate::process::heap;
use crate::registry::{drain_cache, my_cache};

/// malloc_trim: gives back the top beyond `pad` and the pages inside large
/// free blocks. True if anything was released.
pub fn trim(pad: usize) -> bool {
    // Our own cache's blocks may sit between free blocks: return them first.
    if let Some(t) = my_cache() {
        // SAFETY: this thread's own cache.
        unsafe { drain_cache(t, "malloc_trim") };
    }
    let mut h = heap("malloc_trim");
    // SAFETY: the heap is consistent between calls.
    unsafe { h.trim_top(pad) + h.purge_free_blocks() > 0 }
}
