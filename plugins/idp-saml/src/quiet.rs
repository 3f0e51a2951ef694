//! libxml2 reports every parse error, and xmlsec every failed check, on the process's stderr
//! (`func=xmlSecOpenSSLEvpSignatureVerify:...:data do not match`): in the gateway, a line in its
//! log that is not its own, once per refused response. The plugin logs its refusal itself, so
//! the libraries' reports go to `/dev/null`.
//!
//! Both print through libxml2's generic error function, whose context is a `FILE *` when no
//! handler is set; it is per thread, so it is set on the thread about to verify, each time.
#![allow(
    unsafe_code,
    reason = "libxml2's error context is set through its C API: a FILE * and a null handler"
)]

use std::ffi::c_void;
use std::sync::OnceLock;

/// Sends libxml2's and xmlsec's reports of this thread to `/dev/null`.
pub fn silence_this_thread() {
    static SINK: OnceLock<usize> = OnceLock::new();
    let sink = *SINK.get_or_init(|| {
        // SAFETY: both arguments are NUL-terminated C strings; the stream is never closed, so
        // the pointer stays valid for the life of the process.
        unsafe { libc::fopen(c"/dev/null".as_ptr(), c"w".as_ptr()) as usize }
    });
    if sink == 0 {
        return;
    }
    // SAFETY: with a null handler libxml2 keeps its default function, which writes to the
    // context as a `FILE *`; `sink` is one, open for writing for the life of the process.
    unsafe { libxml::bindings::xmlSetGenericErrorFunc(sink as *mut c_void, None) };
}
