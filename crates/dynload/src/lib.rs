//! C functions of a shared library, loaded when first needed rather than
//! by the dynamic linker at exec.
//!
//! Linking a library the usual way makes every process pay for it at
//! start: the dynamic linker maps it and its dependencies and relocates
//! them before `main`. For libiscsi (which brings libibverbs, librdmacm
//! and libnl) and libnfs that was about 0.85 ms and 1.1 MiB of resident
//! memory on every `vireo run`, whether or not a disk was on the network
//! (bench/startup.py). [`library!`] declares the functions as with an
//! `extern "C"` block, but resolves them through `dlopen` when
//! [`Library::load`] is first called, as QEMU loads its block drivers as
//! modules.
//!
//! Confinement forbids mapping new code once a VMM's seccomp filters are
//! in place (and a jail hides the library's file), so a VMM loads what it
//! may need before it confines itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

pub use libloading;

/// Why a library could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The shared object's name (its soname).
    pub library: &'static str,
    /// What the dynamic linker said.
    pub reason: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot load {}: {}", self.library, self.reason)
    }
}

impl std::error::Error for LoadError {}

/// Set by [`seal`]: no library is loaded any more.
static SEALED: AtomicBool = AtomicBool::new(false);

/// From now on [`Library::load`] loads nothing new: a library not loaded
/// yet fails with an error saying so. Called by a process about to
/// confine itself, where mapping a library would be a forbidden call
/// (seccomp would end the process) or its file would be out of sight.
pub fn seal() {
    SEALED.store(true, Ordering::SeqCst);
}

/// One shared library and `T`, the table of its functions, resolved once.
pub struct Library<T: 'static> {
    soname: &'static str,
    resolve: fn(&libloading::Library) -> Result<T, libloading::Error>,
    table: OnceLock<Result<T, LoadError>>,
}

impl<T: 'static> Library<T> {
    /// A library to be loaded by `soname`; `resolve` looks its functions
    /// up (made by [`library!`]).
    pub const fn new(
        soname: &'static str,
        resolve: fn(&libloading::Library) -> Result<T, libloading::Error>,
    ) -> Self {
        Library {
            soname,
            resolve,
            table: OnceLock::new(),
        }
    }

    /// The soname this library is loaded by.
    pub fn soname(&self) -> &'static str {
        self.soname
    }

    /// Loads the library and resolves its functions, the first time;
    /// later calls answer the same (a failure is not retried: the process
    /// may be confined by then).
    pub fn load(&'static self) -> Result<&'static T, LoadError> {
        if self.table.get().is_none() && SEALED.load(Ordering::SeqCst) {
            return Err(LoadError {
                library: self.soname,
                reason: "it was not loaded before this process confined itself".into(),
            });
        }
        self.table
            .get_or_init(|| {
                let error = |e: libloading::Error| LoadError {
                    library: self.soname,
                    reason: e.to_string(),
                };
                // SAFETY: loading runs the library's initialisers; the
                // libraries named with this crate are C libraries whose
                // initialisers only set up their own state.
                let lib = unsafe { libloading::Library::new(self.soname) }.map_err(error)?;
                let table = (self.resolve)(&lib).map_err(error)?;
                // The functions stay valid for the life of the process:
                // the library is never unloaded.
                std::mem::forget(lib);
                Ok(table)
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Whether [`Library::load`] has succeeded.
    pub fn is_loaded(&self) -> bool {
        matches!(self.table.get(), Some(Ok(_)))
    }

    /// The table, for the generated wrappers. Their callers obtained
    /// their handles (contexts) only after [`Library::load`] succeeded,
    /// so this cannot fail; if a caller broke that rule the process ends
    /// with a line naming the library rather than calling through null.
    #[doc(hidden)]
    pub fn table(&'static self) -> &'static T {
        match self.table.get() {
            Some(Ok(t)) => t,
            _ => {
                eprintln!(
                    "vireo: {} was called before it was loaded (a bug)",
                    self.soname
                );
                std::process::abort()
            }
        }
    }
}

/// Declares the functions of a shared library, `extern "C"` style, behind
/// a [`Library`] static that loads it on demand:
///
/// ```
/// dynload::library! {
///     /// The C library's math.
///     pub static LIBM: Libm = "libm.so.6";
///     pub fn cos(x: f64) -> f64;
/// }
/// LIBM.load().unwrap();
/// // SAFETY: cos has no preconditions.
/// assert_eq!(unsafe { cos(0.0) }, 1.0);
/// ```
///
/// `Libm` names the table's type. Each function becomes an `unsafe fn` of
/// the same name and signature that calls through the table; call
/// [`Library::load`] before any.
#[macro_export]
macro_rules! library {
    (
        $(#[$lib_meta:meta])*
        $vis:vis static $lib:ident: $table:ident = $soname:literal;
        $(
            $(#[$fn_meta:meta])*
            pub fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?;
        )*
    ) => {
        /// The functions of the library, resolved.
        #[allow(non_snake_case, missing_docs, dead_code)]
        #[derive(Debug)]
        $vis struct $table {
            $( $name: unsafe extern "C" fn($($ty),*) $(-> $ret)?, )*
        }

        $(#[$lib_meta])*
        $vis static $lib: $crate::Library<$table> = $crate::Library::new($soname, |lib| {
            Ok($table {
                $(
                    // SAFETY: the symbol is the C function declared with
                    // this signature (the library's header says so).
                    $name: unsafe {
                        *lib.get::<unsafe extern "C" fn($($ty),*) $(-> $ret)?>(
                            concat!(stringify!($name), "\0").as_bytes(),
                        )?
                    },
                )*
            })
        });

        $(
            $(#[$fn_meta])*
            // Like an extern block's, a declaration may go unused.
            #[allow(clippy::missing_safety_doc, clippy::too_many_arguments, dead_code)]
            pub unsafe fn $name($($arg: $ty),*) $(-> $ret)? {
                // SAFETY: the caller upholds the C function's contract.
                unsafe { ($lib.table().$name)($($arg),*) }
            }
        )*
    };
}

#[cfg(test)]
mod tests {
    library! {
        static LIBM: Libm = "libm.so.6";
        pub fn cos(x: f64) -> f64;
        pub fn pow(x: f64, y: f64) -> f64;
    }

    library! {
        static MISSING: Missing = "libvireo-does-not-exist.so.1";
        pub fn nothing() -> i32;
    }

    library! {
        static NO_SYMBOL: NoSymbol = "libm.so.6";
        pub fn vireo_no_such_function() -> i32;
    }

    #[test]
    fn functions_resolve_on_load_and_are_called_through_the_table() {
        assert!(!LIBM.is_loaded() || LIBM.load().is_ok());
        LIBM.load().unwrap();
        assert!(LIBM.is_loaded());
        // SAFETY: pure functions.
        unsafe {
            assert_eq!(cos(0.0), 1.0);
            assert_eq!(pow(2.0, 10.0), 1024.0);
        }
    }

    #[test]
    fn a_missing_library_or_symbol_is_an_error_naming_it() {
        let e = MISSING.load().unwrap_err();
        assert_eq!(e.library, "libvireo-does-not-exist.so.1");
        assert!(
            e.to_string()
                .starts_with("cannot load libvireo-does-not-exist.so.1: "),
            "{e}"
        );
        // The same answer again, without a second try.
        assert_eq!(MISSING.load().unwrap_err(), e);
        assert!(!MISSING.is_loaded());
        let e = NO_SYMBOL.load().unwrap_err().to_string();
        assert!(e.contains("vireo_no_such_function"), "{e}");
        let _ = nothing;
    }
}
