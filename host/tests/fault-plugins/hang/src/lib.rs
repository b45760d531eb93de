fault_common::fault_plugin!("hang", Hangs { fn on_admit(&self) { loop { std::thread::sleep(std::time::Duration::from_secs(1)) } } });
