//! Giving freed memory back to the system. glibc's allocator keeps the pages of
//! freed memory mapped for reuse; after a burst (thousands of short calls, or of
//! control connections) the phone would stay at its peak size for good.

/// Asks the allocator to return freed memory to the system. Takes a few
/// milliseconds on a large heap: call it when the phone is quiet.
#[allow(unsafe_code)] // a libc call; see the SAFETY note
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's own heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}
