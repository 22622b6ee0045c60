//! Keeps password hashing from pinning memory.
//!
//! Every Argon2id hash or check takes 19 MiB of working memory (`m=19456`). glibc's malloc
//! serves the first such block with `mmap` and hands it back when freed, but then raises its
//! mmap threshold to the block's size, so later blocks come from the heap of the thread that
//! hashed, and a heap keeps what it frees: each blocking thread that ever checked a password
//! went on holding about 19 MiB (identity idled at 75 MiB after a few sign-ins, the other
//! services at 17). A fixed threshold turns that adjustment off, so every block of 1 MiB or
//! more is mapped for its hash and returned to the system right after.

/// Allocations from this size up are mapped on their own and unmapped when freed.
pub const MMAP_THRESHOLD: usize = 1 << 20;

/// Fixes glibc's mmap threshold at [`MMAP_THRESHOLD`]; call once at start-up. A no-op with
/// other C libraries.
pub fn return_hash_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only sets an allocator parameter; glibc takes its own lock and
        // allows the call at any time. The value is a positive size well within `c_int`.
        let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) };
        if ok != 1 {
            tracing::warn!("could not fix the allocator's mmap threshold; password checks may keep memory");
        }
    }
}
