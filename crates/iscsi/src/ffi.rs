//! The part of libiscsi's C API (iscsi/iscsi.h, iscsi/scsi-lowlevel.h,
//! version 1.19) this crate calls, declared by hand.

#![allow(non_camel_case_types)]

use libc::{c_char, c_int, c_uchar, c_void, size_t};

/// An opaque libiscsi context: one TCP connection and iSCSI session.
#[repr(C)]
pub struct iscsi_context {
    _private: [u8; 0],
}

/// How a command ended, as libiscsi reports it to a callback.
pub const SCSI_STATUS_GOOD: c_int = 0;
/// The target answered with sense data.
pub const SCSI_STATUS_CHECK_CONDITION: c_int = 2;
/// The command was cancelled locally.
pub const SCSI_STATUS_CANCELLED: c_int = 0x0f00_0000;

/// `enum iscsi_session_type`.
pub const ISCSI_SESSION_DISCOVERY: c_int = 1;
/// `enum iscsi_session_type`.
pub const ISCSI_SESSION_NORMAL: c_int = 2;

/// Called when an asynchronous command completes.
pub type iscsi_command_cb = unsafe extern "C" fn(
    iscsi: *mut iscsi_context,
    status: c_int,
    command_data: *mut c_void,
    private_data: *mut c_void,
);

/// `struct scsi_sense` (its bit fields share one `unsigned`, whose last
/// byte holds `bit_pointer`: 16 bytes on x86-64 and aarch64).
#[repr(C)]
pub struct scsi_sense {
    pub error_type: c_uchar,
    pub key: c_int,
    pub ascq: c_int,
    pub bits: [u8; 1],
    pub bit_pointer: c_uchar,
    pub field_pointer: u16,
}

/// `struct scsi_data`.
#[repr(C)]
pub struct scsi_data {
    pub size: c_int,
    pub data: *mut c_uchar,
}

/// The leading fields of `struct scsi_task`, up to the data-in buffer
/// (the rest is only reached through libiscsi's own functions).
#[repr(C)]
pub struct scsi_task {
    pub status: c_int,
    pub cdb_size: c_int,
    pub xfer_dir: c_int,
    pub expxferlen: c_int,
    pub cdb: [c_uchar; 16],
    pub residual_status: c_int,
    pub residual: size_t,
    pub sense: scsi_sense,
    pub datain: scsi_data,
}

/// `struct scsi_iovec`: laid out as POSIX `struct iovec`.
#[repr(C)]
pub struct scsi_iovec {
    pub iov_base: *mut c_void,
    pub iov_len: size_t,
}

/// One UNMAP block descriptor.
#[repr(C)]
pub struct unmap_list {
    pub lba: u64,
    pub num: u32,
}

/// `struct iscsi_target_portal`.
#[repr(C)]
pub struct iscsi_target_portal {
    pub next: *mut iscsi_target_portal,
    pub portal: *const c_char,
}

/// `struct iscsi_discovery_address`.
#[repr(C)]
pub struct iscsi_discovery_address {
    pub next: *mut iscsi_discovery_address,
    pub target_name: *const c_char,
    pub portals: *mut iscsi_target_portal,
}

dynload::library! {
    /// The library, by the soname of the version these declarations
    /// follow (Debian: libiscsi7); loaded by [`crate::load`], not at exec.
    pub static LIBISCSI: Libiscsi = "libiscsi.so.7";
    pub fn iscsi_create_context(initiator_name: *const c_char) -> *mut iscsi_context;
    pub fn iscsi_destroy_context(iscsi: *mut iscsi_context) -> c_int;
    pub fn iscsi_get_error(iscsi: *mut iscsi_context) -> *const c_char;
    pub fn iscsi_get_fd(iscsi: *mut iscsi_context) -> c_int;
    pub fn iscsi_which_events(iscsi: *mut iscsi_context) -> c_int;
    pub fn iscsi_service(iscsi: *mut iscsi_context, revents: c_int) -> c_int;
    pub fn iscsi_set_targetname(iscsi: *mut iscsi_context, name: *const c_char) -> c_int;
    pub fn iscsi_set_session_type(iscsi: *mut iscsi_context, kind: c_int) -> c_int;
    pub fn iscsi_set_initiator_username_pwd(
        iscsi: *mut iscsi_context,
        user: *const c_char,
        passwd: *const c_char,
    ) -> c_int;
    pub fn iscsi_set_noautoreconnect(iscsi: *mut iscsi_context, state: c_int);
    pub fn iscsi_connect_async(
        iscsi: *mut iscsi_context,
        portal: *const c_char,
        cb: iscsi_command_cb,
        private_data: *mut c_void,
    ) -> c_int;
    pub fn iscsi_login_async(
        iscsi: *mut iscsi_context,
        cb: iscsi_command_cb,
        private_data: *mut c_void,
    ) -> c_int;
    pub fn iscsi_logout_async(
        iscsi: *mut iscsi_context,
        cb: iscsi_command_cb,
        private_data: *mut c_void,
    ) -> c_int;
    pub fn iscsi_discovery_async(
        iscsi: *mut iscsi_context,
        cb: iscsi_command_cb,
        private_data: *mut c_void,
    ) -> c_int;
    pub fn iscsi_scsi_cancel_task(iscsi: *mut iscsi_context, task: *mut scsi_task) -> c_int;
    pub fn scsi_free_scsi_task(task: *mut scsi_task);

    pub fn iscsi_reportluns_task(
        iscsi: *mut iscsi_context,
        report_type: c_int,
        alloc_len: c_int,
        cb: iscsi_command_cb,
        private_data: *mut c_void,
    ) -> *mut scsi_task;
    pub fn iscsi_inquiry_task(
        iscsi: *mut iscsi_context,
        lun: c_int,
        evpd: c_int,
        page_code: c_int,
        maxsize: c_int,
        cb: iscsi_command_cb,
        private_data: *mut c_void,
    ) -> *mut scsi_task;
    pub fn iscsi_testunitready_task(
        iscsi: *mut iscsi_context,
        lun: c_int,
        cb: iscsi_command_cb,
        private_data: *mut c_void,
    ) -> *mut scsi_task;
    pub fn iscsi_readcapacity16_task(
        iscsi: *mut iscsi_context,
        lun: c_int,
        cb: iscsi_command_cb,
        private_data: *mut c_void,
    ) -> *mut scsi_task;
    pub fn iscsi_synchronizecache16_task(
        iscsi: *mut iscsi_context,
        lun: c_int,
        lba: u64,
        num_blocks: u32,
        syncnv: c_int,
        immed: c_int,
        cb: iscsi_command_cb,
        private_data: *mut c_void,
    ) -> *mut scsi_task;
    pub fn iscsi_read16_iov_task(
        iscsi: *mut iscsi_context,
        lun: c_int,
        lba: u64,
        datalen: u32,
        blocksize: c_int,
        rdprotect: c_int,
        dpo: c_int,
        fua: c_int,
        fua_nv: c_int,
        group_number: c_int,
        cb: iscsi_command_cb,
        private_data: *mut c_void,
        iov: *mut scsi_iovec,
        niov: c_int,
    ) -> *mut scsi_task;
    pub fn iscsi_write16_iov_task(
        iscsi: *mut iscsi_context,
        lun: c_int,
        lba: u64,
        data: *mut c_uchar,
        datalen: u32,
        blocksize: c_int,
        wrprotect: c_int,
        dpo: c_int,
        fua: c_int,
        fua_nv: c_int,
        group_number: c_int,
        cb: iscsi_command_cb,
        private_data: *mut c_void,
        iov: *mut scsi_iovec,
        niov: c_int,
    ) -> *mut scsi_task;
    pub fn iscsi_unmap_task(
        iscsi: *mut iscsi_context,
        lun: c_int,
        anchor: c_int,
        group: c_int,
        list: *mut unmap_list,
        list_len: c_int,
        cb: iscsi_command_cb,
        private_data: *mut c_void,
    ) -> *mut scsi_task;
}
