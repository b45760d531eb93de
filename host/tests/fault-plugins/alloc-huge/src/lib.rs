// Asks for 64 TiB at its first admission: the allocation fails, and Rust's handler prints
// "memory allocation of N bytes failed" and aborts, as a worker that runs out of memory does.
fault_common::fault_plugin!("alloc-huge", AllocHuge {
    fn on_admit(&self) {
        let layout = std::alloc::Layout::from_size_align(1usize << 46, 64).unwrap();
        // SAFETY: a plain allocation of a non-zero size; freed below if it ever succeeds.
        let p = unsafe { std::alloc::alloc(layout) };
        if p.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        unsafe { std::alloc::dealloc(p, layout) };
    }
});
