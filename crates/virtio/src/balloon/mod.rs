//! virtio-balloon (memory balloon, type 5): the host asks the guest for a
//! number of pages (`num_pages`), the guest hands their numbers over on
//! the inflate queue and the host gives the memory back to the host
//! kernel; deflated pages return on the guest's next touch. Also the
//! statistics queue (the guest's memory figures, asked for every period),
//! free page reporting (ranges the guest's allocator says are free,
//! given back the same way) and deflate-on-OOM (a feature bit only: the
//! guest's OOM path deflates).

mod device;
mod event_handler;
mod metrics;
mod ram;
mod request;
#[cfg(test)]
mod tests;

pub use device::{
    Balloon, BalloonConfig, BalloonControl, BalloonStats, VIRTIO_BALLOON_F_DEFLATE_ON_OOM,
    VIRTIO_BALLOON_F_REPORTING, VIRTIO_BALLOON_F_STATS_VQ, VIRTIO_ID_BALLOON,
};
pub use ram::PAGE_SIZE;
