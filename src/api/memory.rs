//! Memory estimates: before a plan allocates its gradient buffers (and `lossc bench` its
//! inputs), the bytes needed are compared with what the machine has available (the smaller of
//! the system's available memory and a cgroup limit, read with `sysinfo`), and a request that
//! cannot fit is refused with [`Error::OutOfMemory`] instead of aborting in the allocator.
//!
//! In: a byte count. Out: `Ok` or the typed error. Never here: allocation itself.

use sysinfo::{MemoryRefreshKind, RefreshKind, System};

use crate::error::{Error, Result};

/// Bytes of memory available now, if the platform says.
pub fn available_bytes() -> Option<u64> {
    let sys = System::new_with_specifics(
        RefreshKind::nothing().with_memory(MemoryRefreshKind::nothing().with_ram()),
    );
    let mut a = sys.available_memory();
    if let Some(c) = sys.cgroup_limits() {
        a = a.min(c.free_memory);
    }
    (a > 0).then_some(a)
}

/// `Err(OutOfMemory)` if `needed` bytes (None: more than 2^64) exceed what is available.
pub fn ensure_fits(what: &str, needed: Option<u64>) -> Result<()> {
    let available = available_bytes();
    match (needed, available) {
        (Some(n), Some(a)) if n <= a => Ok(()),
        (Some(_), None) => Ok(()), // the platform does not say: let the allocation decide
        (n, a) => Err(Error::OutOfMemory {
            what: what.to_string(),
            needed: n,
            available: a,
        }),
    }
}

/// `count` elements of `size` bytes each, or None on overflow.
pub fn bytes(count: &[usize], size: usize) -> Option<u64> {
    count
        .iter()
        .try_fold(size as u64, |acc, &d| acc.checked_mul(d as u64))
}

/// `1.5 GiB`-style text for a byte count.
pub fn human(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}
