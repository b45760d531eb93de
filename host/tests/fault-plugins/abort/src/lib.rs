fault_common::fault_plugin!("abort", Aborts { fn on_admit(&self) { std::process::abort() } });
