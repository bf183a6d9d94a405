//! The part of libnfs's C API (nfsc/libnfs.h, version 4.0) this crate
//! calls, declared by hand.

#![allow(non_camel_case_types)]

use libc::{c_char, c_int, c_void};

/// An opaque libnfs context: one connection to one server.
#[repr(C)]
pub struct nfs_context {
    _private: [u8; 0],
}

/// An opaque open file on an NFS export.
#[repr(C)]
pub struct nfsfh {
    _private: [u8; 0],
}

/// `struct nfs_url`: what `nfs_parse_url_*` return.
#[repr(C)]
pub struct nfs_url {
    pub server: *mut c_char,
    pub path: *mut c_char,
    pub file: *mut c_char,
}

/// `struct nfs_stat_64`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct nfs_stat_64 {
    pub nfs_dev: u64,
    pub nfs_ino: u64,
    pub nfs_mode: u64,
    pub nfs_nlink: u64,
    pub nfs_uid: u64,
    pub nfs_gid: u64,
    pub nfs_rdev: u64,
    pub nfs_size: u64,
    pub nfs_blksize: u64,
    pub nfs_blocks: u64,
    pub nfs_atime: u64,
    pub nfs_mtime: u64,
    pub nfs_ctime: u64,
    pub nfs_atime_nsec: u64,
    pub nfs_mtime_nsec: u64,
    pub nfs_ctime_nsec: u64,
    pub nfs_used: u64,
}

/// `NFS_V3` for `nfs_set_version`.
pub const NFS_V3: c_int = 3;
/// `NFS_V4` for `nfs_set_version`.
pub const NFS_V4: c_int = 4;

/// Called when an asynchronous call completes: `err` is a result (>= 0)
/// or a negative errno, `data` the call's result or an error string.
pub type nfs_cb = unsafe extern "C" fn(
    err: c_int,
    nfs: *mut nfs_context,
    data: *mut c_void,
    private_data: *mut c_void,
);

dynload::library! {
    /// The library, by the soname of the version these declarations
    /// follow (Debian: libnfs13); loaded by [`crate::load`], not at exec.
    pub static LIBNFS: Libnfs = "libnfs.so.13";
    pub fn nfs_init_context() -> *mut nfs_context;
    pub fn nfs_destroy_context(nfs: *mut nfs_context);
    pub fn nfs_get_fd(nfs: *mut nfs_context) -> c_int;
    pub fn nfs_which_events(nfs: *mut nfs_context) -> c_int;
    pub fn nfs_service(nfs: *mut nfs_context, revents: c_int) -> c_int;
    pub fn nfs_get_error(nfs: *mut nfs_context) -> *mut c_char;
    pub fn nfs_parse_url_dir(nfs: *mut nfs_context, url: *const c_char) -> *mut nfs_url;
    pub fn nfs_destroy_url(url: *mut nfs_url);
    pub fn nfs_set_autoreconnect(nfs: *mut nfs_context, num_retries: c_int);
    pub fn nfs_set_version(nfs: *mut nfs_context, version: c_int) -> c_int;
    pub fn nfs_set_uid(nfs: *mut nfs_context, uid: c_int);
    pub fn nfs_set_gid(nfs: *mut nfs_context, gid: c_int);
    pub fn nfs_set_tcp_syncnt(nfs: *mut nfs_context, v: c_int);
    pub fn nfs_mount_async(
        nfs: *mut nfs_context,
        server: *const c_char,
        exportname: *const c_char,
        cb: nfs_cb,
        private_data: *mut c_void,
    ) -> c_int;
    pub fn nfs_open_async(
        nfs: *mut nfs_context,
        path: *const c_char,
        flags: c_int,
        cb: nfs_cb,
        private_data: *mut c_void,
    ) -> c_int;
    pub fn nfs_close_async(
        nfs: *mut nfs_context,
        fh: *mut nfsfh,
        cb: nfs_cb,
        private_data: *mut c_void,
    ) -> c_int;
    pub fn nfs_fstat64_async(
        nfs: *mut nfs_context,
        fh: *mut nfsfh,
        cb: nfs_cb,
        private_data: *mut c_void,
    ) -> c_int;
    pub fn nfs_pread_async(
        nfs: *mut nfs_context,
        fh: *mut nfsfh,
        offset: u64,
        count: u64,
        cb: nfs_cb,
        private_data: *mut c_void,
    ) -> c_int;
    pub fn nfs_pwrite_async(
        nfs: *mut nfs_context,
        fh: *mut nfsfh,
        offset: u64,
        count: u64,
        buf: *const c_void,
        cb: nfs_cb,
        private_data: *mut c_void,
    ) -> c_int;
    pub fn nfs_fsync_async(
        nfs: *mut nfs_context,
        fh: *mut nfsfh,
        cb: nfs_cb,
        private_data: *mut c_void,
    ) -> c_int;
    pub fn nfs_ftruncate_async(
        nfs: *mut nfs_context,
        fh: *mut nfsfh,
        length: u64,
        cb: nfs_cb,
        private_data: *mut c_void,
    ) -> c_int;
}
