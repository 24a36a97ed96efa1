//! Memory hints for the large buffers of the kernels.
//!
//! The pursuit and the backward pass read and write rows of `c x c` and `c x d` matrices in a
//! data-dependent order (the picked atoms): with 4 KiB pages each Gram-row read lands on pages
//! the TLB does not hold (a 4096-atom f16 Gram spans 8192 of them). Backed by 2 MiB transparent
//! huge pages, the pursuit at d=576, c=4096, k=32, batch 4096 took 135-152 ms against 143-157 ms
//! without (three alternating `mpsae bench` runs each: a few percent, near this machine's
//! noise).

/// Asks the kernel to back `[ptr, ptr + bytes)` with transparent huge pages (2 MiB) where it can:
/// only the 2 MiB-aligned interior is advised. Linux only; a no-op elsewhere or when the kernel
/// refuses (the hint never changes results).
pub fn advise_huge_pages(ptr: *mut u8, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = (ptr as usize).div_ceil(HUGE) * HUGE;
        let end = (ptr as usize + bytes) / HUGE * HUGE;
        if end > start {
            // SAFETY: the range lies inside one live allocation of the caller; MADV_HUGEPAGE only
            // changes how its pages are backed, never their contents.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, bytes);
}

/// A vector of `len` copies of `value`, asked to be backed by huge pages before it is touched.
pub fn huge_vec<T: Copy>(len: usize, value: T) -> Vec<T> {
    let mut v = Vec::new();
    grow_huge(&mut v, len, value);
    v
}

/// Resizes `v` to `len` entries (new ones are `value`); when that needs a fresh allocation, it is
/// asked to be backed by huge pages before it is touched.
pub fn grow_huge<T: Copy>(v: &mut Vec<T>, len: usize, value: T) {
    reserve_huge(v, len);
    v.resize(len, value);
}

/// Makes room for `capacity` entries without touching them; a fresh allocation is asked to be
/// backed by huge pages (the kept entries are copied over).
pub fn reserve_huge<T: Copy>(v: &mut Vec<T>, capacity: usize) {
    if v.capacity() < capacity {
        let mut fresh = Vec::with_capacity(capacity);
        advise_huge_pages(fresh.as_mut_ptr() as *mut u8, capacity * std::mem::size_of::<T>());
        fresh.extend_from_slice(v);
        *v = fresh;
    }
}
