//! The memory allocator of the data services (deals, tiers, commissions): mimalloc, in 4 KiB
//! pages.
//!
//! Each of those binaries names [`MiMalloc`] as its `#[global_allocator]` and calls
//! [`without_huge_pages`] first thing in `main`.
//!
//! A request allocates and frees dozens of blocks (headers, buffers of several KiB, rows,
//! futures), and glibc's malloc serves the blocks over 1 KiB from bins it sorts and merges on
//! the way: 14 % of tiers' CPU under overload went to it. With mimalloc, a GetTierStatus cost
//! tiers about a tenth less CPU (docs/PERFORMANCE.md, Changes).
//!
//! mimalloc asks for transparent huge pages on its arenas, and where the kernel grants them
//! on request (its `madvise` mode, or `always`) every region it touches is backed 2 MiB at
//! once: tiers idled at 33 MiB instead of 16. The process turns huge pages off for itself
//! before most of its memory is touched.
//!
//! identity keeps the system's allocator: its password hashes take 19 MiB blocks, which
//! `identity::allocator` has glibc map and unmap for each hash.

pub use mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process (`PR_SET_THP_DISABLE`), so that memory is
/// backed as it is touched, 4 KiB at a time. Call once, at the start of `main`. Returns whether
/// the kernel took the setting; a kernel without it leaves huge pages as they were.
pub fn without_huge_pages() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)` sets a flag on this process's memory
        // map and reads no pointer; the unused arguments must be zero.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn huge_pages_are_off_for_the_process_once_turned_off() {
        // SAFETY: `PR_GET_THP_DISABLE` reads the flag and takes no pointer.
        let disabled = || unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert!(without_huge_pages());
        assert_eq!(disabled(), 1);
    }
}
