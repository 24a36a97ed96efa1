//! SIGINT and SIGTERM during training: the first one stops the run between two steps (a
//! checkpoint is written, the command exits with 130 or 143 and says how to resume); a second
//! SIGINT exits at once, leaving the last checkpoint as it is.

use std::sync::atomic::{AtomicI32, Ordering};

/// The first stop signal received (0: none).
static RECEIVED: AtomicI32 = AtomicI32::new(0);

#[cfg(unix)]
extern "C" fn on_signal(sig: libc::c_int) {
    // Only async-signal-safe work here: an atomic swap, and _exit on a second SIGINT.
    let before = RECEIVED.swap(sig, Ordering::SeqCst);
    if before != 0 && sig == libc::SIGINT {
        // SAFETY: _exit is async-signal-safe; the checkpoint on disk is whole (atomic renames).
        unsafe { libc::_exit(130) };
    }
}

/// Installs the handlers of SIGINT and SIGTERM.
pub fn install() {
    #[cfg(unix)]
    // SAFETY: the handler only touches an atomic and calls _exit (async-signal-safe).
    unsafe {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// The stop signal received so far, if any.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// The exit code after a stop signal: 128 + its number (130 for SIGINT, 143 for SIGTERM).
pub fn exit_code() -> Option<u8> {
    received().map(|s| (128 + s) as u8)
}
