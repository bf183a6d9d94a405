//! virtio-blk request parsing against hostile and well-formed chains.
