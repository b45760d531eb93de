// Works for the first point (its warm-up and timed admissions), then panics at the third
// admission: the point it finished must be kept.
fault_common::fault_plugin!("panic-later", PanicLater {
    fn on_admit(&self) {
        static ADMITTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        if ADMITTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 2 {
            panic!("the third admission");
        }
    }
});
