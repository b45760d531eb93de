// Starts a long-lived process of its own (which inherits the worker's pipes), then hangs: the
// timeout must kill both, and `run` must not wait on the pipes the process holds.
fault_common::fault_plugin!("spawn-and-hang", SpawnAndHang {
    fn on_admit(&self) {
        let _ = std::process::Command::new("sleep").arg("987654").spawn();
        loop { std::thread::sleep(std::time::Duration::from_secs(1)) }
    }
});
