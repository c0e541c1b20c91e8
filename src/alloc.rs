//! A global allocator that keeps hostile array lengths from killing the process.
//!
//! The protocol codec reserves `Vec::with_capacity(n)` for an array whose length `n` comes
//! straight off the wire, before it knows the bytes are there. A 20-byte frame claiming two
//! billion elements would ask for hundreds of gigabytes, which the system allocator refuses
//! and Rust turns into an abort. Requests at or above `HUGE` are served instead by an anonymous
//! `MAP_NORESERVE` mapping: it costs address space only, no memory is touched, the decoder then
//! fails on the missing bytes and the mapping is returned. Everything smaller goes to the
//! system allocator unchanged.

use std::alloc::{GlobalAlloc, Layout, System};

pub struct GuardedAlloc;

const HUGE: usize = 1 << 30;
const PAGE: usize = 4096;

unsafe fn map(size: usize) -> *mut u8 {
    let p = libc::mmap(
        std::ptr::null_mut(),
        size,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        -1,
        0,
    );
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p as *mut u8
    }
}

unsafe impl GlobalAlloc for GuardedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= HUGE && layout.align() <= PAGE {
            map(layout.size())
        } else {
            System.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= HUGE && layout.align() <= PAGE {
            map(layout.size()) // anonymous mappings are zeroed
        } else {
            System.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() >= HUGE && layout.align() <= PAGE {
            libc::munmap(ptr as *mut libc::c_void, layout.size());
        } else {
            System.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let huge = |s: usize| s >= HUGE && layout.align() <= PAGE;
        if !huge(layout.size()) && !huge(new_size) {
            return System.realloc(ptr, layout, new_size);
        }
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        let new = self.alloc(new_layout);
        if !new.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_reservation_is_cheap_and_usable() {
        let a = GuardedAlloc;
        unsafe {
            let layout = Layout::from_size_align(64 << 30, 8).unwrap();
            let p = a.alloc(layout);
            assert!(!p.is_null());
            *p = 7;
            assert_eq!(*p, 7);
            a.dealloc(p, layout);
        }
    }
}
