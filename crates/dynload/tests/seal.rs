//! `seal` in a process of its own: it changes what every later load does.

dynload::library! {
    static LIBM: Libm = "libm.so.6";
    pub fn cos(x: f64) -> f64;
}

dynload::library! {
    static LATE: Late = "libm.so.6";
    pub fn sin(x: f64) -> f64;
}

#[test]
fn after_seal_only_what_was_loaded_stays_usable() {
    LIBM.load().unwrap();
    dynload::seal();
    assert!(LIBM.load().is_ok());
    // SAFETY: a pure function of a loaded library.
    assert_eq!(unsafe { cos(0.0) }, 1.0);
    let e = LATE.load().unwrap_err().to_string();
    assert_eq!(
        e,
        "cannot load libm.so.6: it was not loaded before this process confined itself"
    );
    assert!(!LATE.is_loaded());
    let _ = sin;
}
