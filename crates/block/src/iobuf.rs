//! I/O buffers that may live in guest memory.
//!
//! Guest memory can change under us at any time (another vCPU writes it), so
//! it must never be seen through a Rust reference. These types carry a raw
//! pointer and a length; the disk code hands them to the kernel (`preadv`,
//! io_uring) or copies with `std::ptr` functions, never by forming a slice.

use std::marker::PhantomData;

/// A buffer the disk reads from (the data of a write).
#[derive(Debug, Clone, Copy)]
pub struct IoBuf<'a> {
    ptr: *const u8,
    len: usize,
    _life: PhantomData<&'a [u8]>,
}

/// A buffer the disk writes into (the destination of a read).
#[derive(Debug, Clone, Copy)]
pub struct IoBufMut<'a> {
    ptr: *mut u8,
    len: usize,
    _life: PhantomData<&'a mut [u8]>,
}

// SAFETY: the buffers are plain memory ranges; whoever built one from a raw
// pointer promised it stays valid for 'a on any thread.
unsafe impl Send for IoBuf<'_> {}
// SAFETY: as above; sharing only allows copying the pointer.
unsafe impl Sync for IoBuf<'_> {}
// SAFETY: as above.
unsafe impl Send for IoBufMut<'_> {}
// SAFETY: as above.
unsafe impl Sync for IoBufMut<'_> {}

impl<'a> IoBuf<'a> {
    /// A buffer over host memory the caller owns.
    pub fn new(data: &'a [u8]) -> Self {
        Self {
            ptr: data.as_ptr(),
            len: data.len(),
            _life: PhantomData,
        }
    }

    /// A buffer over raw memory, such as a range of guest memory.
    ///
    /// # Safety
    /// `[ptr, ptr + len)` must be readable for all of `'a`. Its contents may
    /// change concurrently; the disk code copies it without assuming otherwise.
    pub unsafe fn from_raw(ptr: *const u8, len: usize) -> Self {
        Self {
            ptr,
            len,
            _life: PhantomData,
        }
    }

    /// Start of the buffer.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<'a> IoBufMut<'a> {
    /// A buffer over host memory the caller owns.
    pub fn new(data: &'a mut [u8]) -> Self {
        Self {
            ptr: data.as_mut_ptr(),
            len: data.len(),
            _life: PhantomData,
        }
    }

    /// A buffer over raw memory, such as a range of guest memory.
    ///
    /// # Safety
    /// `[ptr, ptr + len)` must be writable for all of `'a`, and nothing may
    /// hold a Rust reference to it meanwhile.
    pub unsafe fn from_raw(ptr: *mut u8, len: usize) -> Self {
        Self {
            ptr,
            len,
            _life: PhantomData,
        }
    }

    /// Start of the buffer.
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
