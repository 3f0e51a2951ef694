//! The process's allocator: mimalloc, asked the way its fast path answers.
//!
//! The `mimalloc` crate's `MiMalloc` passes every allocation to `mi_malloc_aligned`, whatever
//! its alignment. mimalloc answers that quickly only when a free block of the size happens to
//! lie at the alignment; otherwise, for every size whose block is not a power of two (a header
//! map's entries, a read buffer), it over-allocates and aligns by hand, about 150 instructions
//! more for each, three times a proxied request. An alignment that plain `mi_malloc` already
//! guarantees needs none of that: mimalloc's blocks above one word are multiples of
//! [`MALLOC_ALIGN`] from aligned pages, and one word is the least a block holds, so any layout
//! whose alignment is at most both 16 and its size is met by `mi_malloc` (the rule the
//! standard library applies to the system's malloc). Larger alignments (tokio's task cells,
//! 128 bytes) still go to the aligned functions.
//!
//! Layer: the bottom of the crate, beside [`crate::text`]; it uses nothing, and only `main.rs`
//! uses it.
#![allow(
    unsafe_code,
    reason = "a global allocator is unsafe by contract; each call passes the caller's layout on"
)]

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys::{
    mi_free, mi_malloc, mi_malloc_aligned, mi_realloc, mi_realloc_aligned, mi_zalloc,
    mi_zalloc_aligned,
};

/// The alignment of every block `mi_malloc` returns that is larger than one word
/// (`MI_MAX_ALIGN_SIZE` on 64- and 32-bit targets).
pub const MALLOC_ALIGN: usize = 16;

/// mimalloc as the global allocator; see the module's comment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allocator;

/// Whether plain `mi_malloc` meets `align` for `size` bytes.
const fn plain(size: usize, align: usize) -> bool {
    align <= MALLOC_ALIGN && align <= size
}

// SAFETY: every function hands mimalloc the layout's size (and its alignment wherever plain
// `mi_malloc` might not meet it), and frees and reallocates only what mimalloc allocated, as
// `GlobalAlloc`'s callers guarantee.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl's comment.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi_malloc(layout.size()).cast()
            } else {
                mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl's comment.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi_zalloc(layout.size()).cast()
            } else {
                mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: see the impl's comment; mimalloc finds the block's size and alignment itself.
        unsafe { mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: see the impl's comment.
        unsafe {
            if plain(new_size, layout.align()) {
                mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size up to a few pages at every alignment up to a page, allocated, zeroed,
    /// written, grown and shrunk: each block lies at its alignment and keeps its bytes. Several
    /// blocks are held at once, so that blocks come from inside pages, not only their starts.
    #[test]
    fn every_block_lies_at_its_alignment_and_keeps_its_bytes() {
        let allocator = Allocator;
        let sizes = (1..=48).chain([63, 64, 100, 1000, 1025, 1100, 3000, 4097, 70_000]);
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in sizes.clone() {
                let layout = Layout::from_size_align(size, align).expect("layout");
                let mut held = Vec::new();
                for round in 0..8u8 {
                    // SAFETY: a layout of non-zero size; each block is freed below with it.
                    let block = unsafe {
                        if round % 2 == 0 {
                            allocator.alloc(layout)
                        } else {
                            allocator.alloc_zeroed(layout)
                        }
                    };
                    assert!(!block.is_null(), "{size} at {align}");
                    assert_eq!(block.addr() % align, 0, "{size} at {align}: {block:p}");
                    // SAFETY: `block` holds `size` bytes.
                    let bytes = unsafe { std::slice::from_raw_parts_mut(block, size) };
                    if round % 2 == 1 {
                        assert!(bytes.iter().all(|&b| b == 0), "{size} at {align} zeroed");
                    }
                    bytes.fill(round);
                    held.push((block, round));
                }
                for (mut block, round) in held {
                    let mut layout = layout;
                    // Grown, then shrunk below the first size.
                    for new_size in [size * 2 + 7, size.div_ceil(2)] {
                        let kept_bytes = layout.size().min(new_size);
                        // SAFETY: `block` came from this allocator with `layout` and is live.
                        block = unsafe { allocator.realloc(block, layout, new_size) };
                        assert!(!block.is_null());
                        assert_eq!(block.addr() % align, 0, "{size} → {new_size} at {align}");
                        // SAFETY: `block` holds at least the bytes it kept.
                        let kept = unsafe { std::slice::from_raw_parts(block, kept_bytes) };
                        assert!(kept.iter().all(|&b| b == round), "{size} → {new_size}");
                        layout = Layout::from_size_align(new_size, align).expect("layout");
                    }
                    // SAFETY: `block` is live with `layout`.
                    unsafe { allocator.dealloc(block, layout) };
                }
            }
        }
    }
}
