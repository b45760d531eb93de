fault_common::fault_plugin!("segfault", Segfaults {
    fn on_admit(&self) {
        // SAFETY: none; this plugin exists to crash with SIGSEGV.
        unsafe { std::ptr::null_mut::<u32>().write_volatile(1) }
    }
});
