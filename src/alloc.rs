//! The process allocator: mimalloc for everything up to `LARGE`, the system allocator above it.
//!
//! Why the split: mimalloc zeroes large zeroed allocations by writing to them, which makes every
//! page resident; glibc's `calloc` maps fresh zero pages from the kernel and touches nothing. sled
//! builds ~40 metrics histograms of 512 KiB each when it opens (zero-filled, never used unless its
//! metrics feature is on): 20 MB of resident zeroes under mimalloc, nothing under calloc. Blocks
//! this large are rare and long-lived here (request bodies, sled buffers), so the system
//! allocator's per-call cost does not matter for them; the small, hot allocations stay on
//! mimalloc. Ownership is decided by size alone, so `dealloc` always finds the right allocator.

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc;

/// Blocks of this many bytes or more go to the system allocator.
pub const LARGE: usize = 256 * 1024;
/// What glibc's malloc guarantees on 64-bit targets.
const SYSTEM_MIN_ALIGN: usize = 16;

pub struct GatewayAlloc;

/// Keeps glibc from holding freed large blocks: with a fixed mmap threshold every block of
/// `LARGE` bytes or more is its own mapping, returned to the kernel when freed. (By default the
/// threshold grows after frees, and multi-MB request bodies would then stay in the heap.)
pub fn configure_system_allocator() {
    // SAFETY: mallopt only changes glibc's tuning; called once at start, before the workers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE as libc::c_int);
    }
}

fn is_large(size: usize) -> bool {
    size >= LARGE
}

unsafe fn system_alloc(layout: Layout, zeroed: bool) -> *mut u8 {
    if layout.align() <= SYSTEM_MIN_ALIGN {
        if zeroed {
            libc::calloc(1, layout.size()).cast()
        } else {
            libc::malloc(layout.size()).cast()
        }
    } else {
        let mut out: *mut libc::c_void = std::ptr::null_mut();
        if libc::posix_memalign(&mut out, layout.align(), layout.size()) != 0 {
            return std::ptr::null_mut();
        }
        if zeroed {
            std::ptr::write_bytes(out.cast::<u8>(), 0, layout.size());
        }
        out.cast()
    }
}

// SAFETY: every block is allocated and freed by the same allocator, chosen by its size, which
// `GlobalAlloc` callers must pass unchanged to `dealloc`/`realloc`; both allocators honour the
// layout's alignment (posix_memalign above glibc's 16-byte guarantee).
unsafe impl GlobalAlloc for GatewayAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_large(layout.size()) {
            system_alloc(layout, false)
        } else {
            MiMalloc.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_large(layout.size()) {
            system_alloc(layout, true)
        } else {
            MiMalloc.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_large(layout.size()) {
            libc::free(ptr.cast());
        } else {
            MiMalloc.dealloc(ptr, layout);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match (is_large(layout.size()), is_large(new_size)) {
            (false, false) => MiMalloc.realloc(ptr, layout, new_size),
            (true, true) if layout.align() <= SYSTEM_MIN_ALIGN => {
                libc::realloc(ptr.cast(), new_size).cast()
            }
            _ => {
                // Crossing the line (or an over-aligned large block): move between allocators.
                let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
                let new = self.alloc(new_layout);
                if !new.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                new
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(p: *mut u8, n: usize) {
        for i in 0..n {
            unsafe { *p.add(i) = (i % 251) as u8 };
        }
    }

    fn check(p: *mut u8, n: usize) {
        for i in 0..n {
            assert_eq!(unsafe { *p.add(i) }, (i % 251) as u8, "byte {i}");
        }
    }

    #[test]
    fn realloc_keeps_bytes_across_the_line_both_ways() {
        let a = GatewayAlloc;
        unsafe {
            let small = Layout::from_size_align(1000, 8).unwrap();
            let p = a.alloc(small);
            fill(p, 1000);
            let p = a.realloc(p, small, LARGE + 10);
            check(p, 1000);
            fill(p, LARGE + 10);
            let big = Layout::from_size_align(LARGE + 10, 8).unwrap();
            let p = a.realloc(p, big, LARGE * 2);
            check(p, LARGE + 10);
            let bigger = Layout::from_size_align(LARGE * 2, 8).unwrap();
            let p = a.realloc(p, bigger, 500);
            check(p, 500);
            a.dealloc(p, Layout::from_size_align(500, 8).unwrap());
        }
    }

    #[test]
    fn zeroed_and_over_aligned_blocks() {
        let a = GatewayAlloc;
        unsafe {
            for (size, align) in [(LARGE, 16), (LARGE * 3, 4096), (64, 64), (LARGE - 1, 8)] {
                let l = Layout::from_size_align(size, align).unwrap();
                let p = a.alloc_zeroed(l);
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0);
                assert!((0..size).all(|i| *p.add(i) == 0));
                a.dealloc(p, l);
            }
        }
    }
}
